"""Hostile and OpenAI-strict traffic against the real app over HTTP on 127.0.0.1: bounded
work per request, a 4xx for every malformed input, isolation and cancellation inside the
model deployment, token-by-token streaming with the official `openai` client.

The engine is tests/serve/streaming_engine.py (scripted, the whole engine protocol), so
what is tested is the serving layer, not a model.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from factory.models.engine import ChatRequest, GenerationParams
from tests.imagegen import jpeg
from tests.serve.apps import running_app, serve_config
from tests.serve.image_host import image_host

KEYS_ENV = "FACTORY_TEST_HOSTILE_KEYS"
KEY = "hostile-key-" + "z" * 24
IMAGE = jpeg(64, 48)
B64 = base64.b64encode(IMAGE).decode()
DATA_URL = "data:image/jpeg;base64," + B64
MODEL = "scripted"


@pytest.fixture(scope="module")
def config():
    return serve_config(
        engine={"kind": "tests.serve.streaming_engine:StreamingEngine", "model": "script"},
        model_name=MODEL,
        generation={"max_new_tokens": 16},
        auth={"api_keys_env": KEYS_ENV},
        api_deployment={"runtime_env": {"env_vars": {KEYS_ENV: KEY}}},
        limits={
            "request_timeout_s": 2.0,
            "body_read_timeout_s": 1.0,
            "max_messages": 8,
            "max_text_chars": 2_000,
            "max_json_keys": 200,
            "max_new_tokens": 64,
        },
        # batches gather for a while, so concurrent requests share one engine call
        model_deployment={"max_batch_size": 8, "batch_wait_timeout_s": 0.3},
    )


@pytest.fixture(scope="module")
def app(serve_ray, config):
    with image_host(IMAGE) as host, running_app(config) as url:
        yield url, host


@pytest.fixture(scope="module")
def client(app):
    url, _ = app
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def post(url: str, path: str, key: str | None = KEY, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    return requests.post(f"{url}{path}", headers=headers, timeout=60, **kwargs)


def chat(url: str, text: str = "hello", **body) -> requests.Response:
    defaults = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return post(url, "/v1/chat/completions", json={**defaults, **body})


def raw_chat(url: str, raw: bytes) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return post(url, "/v1/chat/completions", data=raw, headers=headers)


def error_of(answer: requests.Response) -> tuple[int, str]:
    error = answer.json()["error"]
    assert error["message"] and error["type"]
    return answer.status_code, error["code"]


def test_limits_are_refused_with_specific_codes_before_the_model(app):
    url, _ = app
    many = [{"role": "user", "content": "hi"}] * 50_000
    cases = {
        "50,000 messages": (chat(url, messages=many), 413, "too_many_messages"),
        "long message": (chat(url, "x" * 2_001), 413, "text_too_long"),
        "long description": (
            post(
                url,
                "/v1/caption",
                json={"image": B64, "catalogue": {"description": "d" * 2_001}},
            ),
            413,
            "text_too_long",
        ),
        "5,000 deep": (raw_chat(url, b"[" * 5_000 + b"]" * 5_000), 400, "json_too_deep"),
        "100,000 deep": (raw_chat(url, b"[" * 100_000 + b"]" * 100_000), 400, "json_too_deep"),
        "33 deep": (raw_chat(url, b'{"a":' * 33 + b"1" + b"}" * 33), 400, "json_too_deep"),
        "unknown keys": (
            raw_chat(url, json.dumps({f"k{i}": 0 for i in range(200_000)}).encode()),
            413,
            "too_many_keys",
        ),
        "lone surrogate": (
            raw_chat(
                url,
                b'{"model": "scripted", "messages": [{"role": "user", "content": "a\\udfff"}]}',
            ),
            400,
            "invalid_text",
        ),
        "context": (chat(url, "word " * 250), 400, "context_length_exceeded"),
    }
    for name, (answer, status, code) in cases.items():
        assert error_of(answer) == (status, code), name
        assert len(answer.content) < 2_000, name  # no megabyte error bodies


def test_sampling_parameters_are_held_to_the_accepted_ranges(app):
    url, _ = app
    cases = {
        "seed 2**70": (chat(url, seed=2**70), 422, "invalid_request"),
        "temperature 3": (chat(url, temperature=3), 422, "invalid_request"),
        "top_p 0": (chat(url, top_p=0), 422, "invalid_request"),
        "response_format string": (chat(url, response_format="json"), 422, "invalid_request"),
        "json_schema without schema": (
            chat(url, response_format={"type": "json_schema"}),
            422,
            "invalid_request",
        ),
        "n=2": (chat(url, n=2), 400, "unsupported_parameter"),
        "5 stops": (chat(url, stop=["a", "b", "c", "d", "e"]), 400, "too_many_stop_sequences"),
    }
    for name, (answer, status, code) in cases.items():
        assert error_of(answer) == (status, code), name
    # a vanishing temperature is greedy decoding, as vLLM treats it; the largest seed passes
    assert chat(url, temperature=1e-300, seed=2**63 - 1).status_code == 200


def test_images_where_none_is_taken_are_refused(app):
    url, host = app
    system_image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    messages = [{"role": "system", "content": system_image}, {"role": "user", "content": "hi"}]
    assert error_of(chat(url, messages=messages)) == (400, "invalid_messages")
    two_files = [
        ("image", ("a.jpg", IMAGE, "image/jpeg")),
        ("image", ("b.jpg", IMAGE, "image/jpeg")),
    ]
    answer = post(url, "/v1/caption", files=two_files, data={"style": "objective"})
    assert error_of(answer) == (422, "invalid_request")
    assert answer.json()["error"]["param"] == "image"
    hits_before = len(host.hits)
    for spelling in ("2130706433", "0177.0.0.1", "127.1", "127.0.0.1.", "0"):
        body = {"image_url": f"http://{spelling}:{host.port}/image.jpg"}
        assert error_of(post(url, "/v1/caption", json=body)) == (403, "url_forbidden"), spelling
    assert len(host.hits) == hits_before


def test_openapi_schema_needs_the_key(app):
    url, _ = app
    assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 401
    schema = requests.get(
        f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert "/v1/chat/completions" in schema.json()["paths"]


def test_a_stalled_upload_gets_a_json_408(app):
    url, _ = app
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"model": "')  # 11 bytes of 5,000, then silence
        reply = _read_response(sock)
    status_line, _, body = reply.partition(b"\r\n")
    assert b" 408 " in status_line, reply[:200]
    assert json.loads(body.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_openai_client_streams_chunk_by_chunk_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "WORDS:6 count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) >= 6  # one per word, as produced
    assert "".join(contents) == "w1 w2 w3 w4 w5 w6"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 6)


def test_finish_reason_length_usage_and_stop(client):
    cut = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "WORDS:10"}], max_tokens=4
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "w1 w2 w3 w4"
    assert cut.usage.completion_tokens == 4 and cut.usage.total_tokens == 5
    stopped = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "WORDS:10"}], stop=["w3", "w7"]
    )
    assert stopped.choices[0].message.content == "w1 w2 "
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "WORDS:10"}], stop="w3", stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == "w1 w2 "


def test_response_format_reaches_the_engine(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    formats = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    ]
    for response_format in formats:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "answer in JSON"}],
            response_format=response_format,
        )
        assert json.loads(reply.choices[0].message.content) == {"ok": True}


def test_a_request_that_breaks_the_engine_fails_alone(app):
    url, _ = app
    texts = ["RAISE", "WORDS:2", "WORDS:3", "WORDS:4", "WORDS:5", "WORDS:6"]
    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(lambda text: chat(url, text), texts))
    assert error_of(answers[0]) == (500, "internal_error")
    for count, answer in enumerate(answers[1:], start=2):
        assert answer.status_code == 200
        words = answer.json()["choices"][0]["message"]["content"].split()
        assert len(words) == count


def test_requests_gathered_into_one_call_keep_their_own_limits_and_refusals(app):
    url, _ = app
    bodies = [
        {"text": "WORDS:6", "max_tokens": 2},
        {"text": "WORDS:3", "max_tokens": 8},
        {"text": "word " * 250},  # over the 256-token context
        {"text": "WORDS:4", "max_tokens": 8},
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: chat(url, **body), bodies))
    assert error_of(answers[2]) == (400, "context_length_exceeded")
    replies = [answers[position].json()["choices"][0] for position in (0, 1, 3)]
    assert [reply["message"]["content"] for reply in replies] == [
        "w1 w2",
        "w1 w2 w3",
        "w1 w2 w3 w4",
    ]
    assert [reply["finish_reason"] for reply in replies] == ["length", "stop", "stop"]


def test_wedge_refused_quickly_and_a_timed_out_request_frees_the_model(app):
    url, _ = app
    started = time.monotonic()
    assert error_of(chat(url, "word " * 250)) == (400, "context_length_exceeded")
    # 60 words at half a second each: 30 s of engine time if nothing stopped it
    slow = chat(url, "SLOW:0.5 WORDS:60", max_tokens=64)
    assert error_of(slow) == (504, "timeout")
    after = chat(url, "WORDS:3")
    assert after.status_code == 200
    # the slow request would have held the engine for about 28 s more
    assert time.monotonic() - started < 15


def test_the_pipeline_calls_generate_through_a_handle(app, config):
    from ray import serve

    handle = serve.get_deployment_handle("model", app_name=config.app_name)
    request = ChatRequest("WORDS:3")
    generated = (
        handle.options(multiplexed_model_id="")
        .generate.remote([request], GenerationParams(max_new_tokens=2))
        .result(timeout_s=30)
    )
    assert generated.texts == ["w1 w2"]
    [completion] = generated.completions
    assert (completion.finish_reason, completion.completion_tokens) == ("length", 2)
