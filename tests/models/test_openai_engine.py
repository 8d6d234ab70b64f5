"""OpenAIEngine against a real HTTP server on 127.0.0.1 that speaks chat completions.

The server answers "echo: <prompt>" so order can be checked, records every attempt (body,
headers, time) and can be told to fail, stall or slow down first.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    OpenAIOptions,
)
from factory.models.engine_loader import load_engine
from factory.models.openai_engine import OpenAIEngine, OpenAIServerError, _retry_after_s

MODEL = "tiny-served"
WEIGHTS_ROOT = "/models/tiny-llava-v1"
GREEDY = GenerationParams(max_new_tokens=8)


@dataclass
class Failure:
    status: int
    message: str = "try again"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ServerState:
    """What the fake server does next and what it saw; reset before every test."""

    failures: list[Failure] = field(default_factory=list)  # served first, one per attempt
    stall_s: float = 0.0  # sleep this long before every answer (timeouts)
    delay_for: dict[str, float] = field(default_factory=dict)  # prompt -> sleep before answer
    attempts: list[dict[str, Any]] = field(default_factory=list)
    model_listings: int = 0
    refuse_response_format: bool = False  # answer 400 to any request carrying one
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _prompt_of(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return next(part["text"] for part in content if part["type"] == "text")


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """An echo of the prompt, cut to max_tokens words (finish reason length) like a model;
    under a response_format, the echo inside the JSON object the schema asks for."""
    words = f"echo: {_prompt_of(body)}".split()
    kept = words[: body["max_tokens"]]
    text = f"  {' '.join(kept)} "  # padded: the engine must strip
    if "response_format" in body:
        text = json.dumps({"facts": [" ".join(kept)]})
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "length" if len(kept) < len(words) else "stop",
    }
    usage = {"prompt_tokens": len(_prompt_of(body).split()), "completion_tokens": len(kept)}
    return {"model": body["model"], "choices": [choice], "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    state: ServerState  # set on the subclass the fixture makes

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            self._send(404, {"error": {"message": "no such route"}})
            return
        with self.state.lock:
            self.state.model_listings += 1
        listing = {"object": "list", "data": [{"id": MODEL, "root": WEIGHTS_ROOT}]}
        self._send(200, listing)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.state
        with state.lock:
            state.attempts.append(
                {"body": body, "headers": dict(self.headers), "time": time.monotonic()}
            )
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            failure = state.failures.pop(0) if state.failures else None
        try:
            time.sleep(state.stall_s + state.delay_for.get(_prompt_of(body), 0.0))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "no such route"}})
            elif failure is not None:
                error = {"error": {"message": failure.message, "code": failure.status}}
                self._send(failure.status, error, failure.headers)
            elif state.refuse_response_format and "response_format" in body:
                error = {"error": {"message": "Unsupported parameter: 'response_format'"}}
                self._send(400, error)
            else:
                self._send(200, _answer(body))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    handler = type("Handler", (_Handler,), {"state": ServerState()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def state(server) -> ServerState:
    fresh = ServerState()
    server.RequestHandlerClass.state = fresh
    return fresh


@pytest.fixture
def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _engine(base_url: str, revision: str | None = None, **options: Any) -> OpenAIEngine:
    settings = {"backoff_s": 0.01, **options}
    config = EngineConfig(
        kind="openai",
        model=MODEL,
        revision=revision,
        max_image_side=64,
        adapters={"museum-style": "s3://adapters/museum-style"},
        openai=OpenAIOptions(base_url=base_url, **settings),
    )
    return OpenAIEngine(config)


def _encoded(size: tuple[int, int], mode: str = "RGB", image_format: str = "PNG") -> bytes:
    colour = {"RGB": (180, 60, 20), "RGBA": (20, 60, 180, 0)}[mode]
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, image_format)
    return buffer.getvalue()


def test_answers_come_back_in_request_order(state, base_url):
    prompts = [f"Describe object {n}." for n in range(6)]
    # the first requests answer last, so completion order is the reverse of request order
    state.delay_for = {prompt: 0.05 * (6 - n) for n, prompt in enumerate(prompts)}
    engine = _engine(base_url, max_concurrency=6)
    texts = engine.generate([ChatRequest(prompt) for prompt in prompts], GREEDY)
    assert texts == [f"echo: {prompt}" for prompt in prompts]
    finished = [_prompt_of(attempt["body"]) for attempt in state.attempts]
    assert sorted(finished) == sorted(prompts)
    assert engine.generate([], GREEDY) == []


def test_request_body_carries_messages_and_decoding(state, base_url):
    engine = _engine(base_url)
    params = GenerationParams(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=5)
    engine.generate([ChatRequest("Name a colour.", system="Be plain.")], params)
    (attempt,) = state.attempts
    assert attempt["body"] == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be plain."},
            {"role": "user", "content": "Name a colour."},
        ],
        "max_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 5,
    }
    assert "Authorization" not in attempt["headers"]


def test_image_goes_as_a_resized_jpeg_data_url(state, base_url):
    engine = _engine(base_url)
    engine.generate([ChatRequest("Describe.", _encoded((640, 480), "RGBA"))], GREEDY)
    image_part, text_part = state.attempts[0]["body"]["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Describe."}
    assert image_part["type"] == "image_url"
    header, payload = image_part["image_url"]["url"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 48))
    red, green, blue = image.getpixel((32, 24))
    assert min(red, green, blue) > 240  # transparent pixels land on white, as locally


def test_adapter_is_sent_as_the_model_name(state, base_url):
    engine = _engine(base_url)
    requests = [ChatRequest("a", adapter="museum-style"), ChatRequest("b")]
    engine.generate(requests, GREEDY)
    models = {_prompt_of(a["body"]): a["body"]["model"] for a in state.attempts}
    assert models == {"a": "museum-style", "b": MODEL}
    with pytest.raises(ValueError, match="unknown adapter 'other'"):
        engine.generate([ChatRequest("c", adapter="other")], GREEDY)


def test_429_and_503_are_retried_with_growing_backoff(state, base_url):
    state.failures = [Failure(429), Failure(503), Failure(502)]
    engine = _engine(base_url, backoff_s=0.1, max_retries=3)
    assert engine.generate([ChatRequest("Hello.")], GREEDY) == ["echo: Hello."]
    times = [attempt["time"] for attempt in state.attempts]
    assert len(times) == 4
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4  # 0.1 s, doubling


def test_retry_after_is_honoured(state, base_url):
    state.failures = [Failure(429, headers={"Retry-After": "1"})]
    engine = _engine(base_url, backoff_s=0.01)
    assert engine.generate([ChatRequest("Hello.")], GREEDY) == ["echo: Hello."]
    first, second = (attempt["time"] for attempt in state.attempts)
    assert second - first >= 0.95  # the server's 1 s, not the 0.01 s backoff


def test_retry_after_reads_seconds_and_http_dates():
    assert _retry_after_s("3") == 3.0
    assert _retry_after_s("-2") == 0.0
    assert _retry_after_s(None) is None
    assert _retry_after_s("soon") is None
    in_ten = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 <= _retry_after_s(in_ten) <= 10


def test_client_errors_are_not_retried_and_surface_the_server_message(state, base_url):
    state.failures = [Failure(400, "prompt is 9000 tokens, the model takes 4096")]
    engine = _engine(base_url, max_retries=5)
    with pytest.raises(OpenAIServerError, match="9000 tokens, the model takes 4096") as raised:
        engine.generate([ChatRequest("Too long.")], GREEDY)
    assert raised.value.status == 400
    assert len(state.attempts) == 1


def test_server_errors_give_up_after_max_retries(state, base_url):
    state.failures = [Failure(500, "model crashed")] * 10
    engine = _engine(base_url, max_retries=2)
    with pytest.raises(OpenAIServerError, match="after 3 attempts.*model crashed"):
        engine.generate([ChatRequest("Hello.")], GREEDY)
    assert len(state.attempts) == 3


def test_timeouts_are_retried_then_fail_clearly(state, base_url):
    state.stall_s = 0.5
    engine = _engine(base_url, timeout_s=0.1, max_retries=2)
    with pytest.raises(OpenAIServerError, match=r"failed 3 times \(timeout 0.1 s each\)"):
        engine.generate([ChatRequest("Hello.")], GREEDY)
    assert len(state.attempts) == 3


def test_connection_errors_are_retried_then_fail_clearly():
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    engine = _engine(url, revision="pinned", max_retries=2, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(OpenAIServerError, match="failed 3 times"):
        engine.generate([ChatRequest("Hello.")], GREEDY)
    assert time.monotonic() - started >= 0.05 + 0.1  # it backed off between the tries


def test_concurrency_never_exceeds_max_concurrency(state, base_url):
    state.stall_s = 0.1
    engine = _engine(base_url, max_concurrency=3)
    requests = [ChatRequest(f"Object {n}.") for n in range(12)]
    started = time.monotonic()
    assert engine.generate(requests, GREEDY) == [f"echo: Object {n}." for n in range(12)]
    assert state.max_in_flight == 3  # bounded, and the bound is actually used
    assert time.monotonic() - started < 12 * 0.1  # in parallel, not one by one
    # two callers sharing the engine share its bound too
    state.max_in_flight = 0
    threads = [
        threading.Thread(target=engine.generate, args=(requests[:6], GREEDY)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.max_in_flight == 3


def test_api_key_comes_from_the_named_environment_variable(state, base_url, monkeypatch):
    monkeypatch.setenv("FACTORY_TEST_LLM_KEY", "sk-test-123")
    engine = _engine(base_url, api_key_env="FACTORY_TEST_LLM_KEY")
    engine.generate([ChatRequest("Hello.")], GREEDY)
    assert state.attempts[0]["headers"]["Authorization"] == "Bearer sk-test-123"
    monkeypatch.delenv("FACTORY_TEST_LLM_KEY")
    with pytest.raises(ValueError, match="FACTORY_TEST_LLM_KEY"):
        _engine(base_url, api_key_env="FACTORY_TEST_LLM_KEY")


def test_info_records_what_the_server_serves(state, base_url):
    engine = load_engine(
        EngineConfig(kind="openai", model=MODEL, openai=OpenAIOptions(base_url=base_url))
    )
    assert isinstance(engine, OpenAIEngine)
    assert engine.info == EngineInfo(engine="openai", model=MODEL, revision=WEIGHTS_ROOT)
    assert state.model_listings == 1
    pinned = EngineConfig(
        kind="openai", model=MODEL, revision="v7", openai=OpenAIOptions(base_url=base_url)
    )
    assert OpenAIEngine(pinned).info.revision == "v7"
    assert state.model_listings == 1  # a pinned revision asks the server nothing
    missing = EngineConfig(kind="openai", model="gpt-x", openai=OpenAIOptions(base_url=base_url))
    with pytest.raises(ValueError, match=f"does not serve model 'gpt-x'.*{MODEL}"):
        OpenAIEngine(missing)


def test_kind_openai_needs_a_server():
    with pytest.raises(ValueError, match="openai.base_url"):
        EngineConfig(kind="openai", model=MODEL)


def test_the_http_engine_loads_no_model_stack():
    # It runs on drivers and CPU actors that may lack torch; a fresh interpreter keeps other
    # tests' imports out.
    script = (
        "import sys, factory.models.openai_engine\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


FACTS_SCHEMA = {
    "title": "FactsReply",
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
    "additionalProperties": False,
}


def test_completions_carry_the_finish_reason_and_usage(state, base_url):
    engine = _engine(base_url)
    whole, cut = engine.complete(
        [ChatRequest("Two words."), ChatRequest("A prompt of many more words than eight.")],
        GREEDY,
    )
    assert (whole.text, whole.finish_reason) == ("echo: Two words.", "stop")
    assert (whole.prompt_tokens, whole.completion_tokens) == (2, 3)
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 8)
    assert engine.generated_tokens == 11


def test_a_json_schema_goes_as_a_strict_response_format(state, base_url):
    engine = _engine(base_url)
    assert engine.constrains_json
    (reply,) = engine.complete([ChatRequest("Split it.", json_schema=FACTS_SCHEMA)], GREEDY)
    assert json.loads(reply.text) == {"facts": ["echo: Split it."]}
    assert state.attempts[0]["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "FactsReply", "schema": FACTS_SCHEMA, "strict": True},
    }


def test_a_server_refusing_response_format_gets_the_prompt_alone_said_once(state, base_url, caplog):
    state.refuse_response_format = True
    engine = _engine(base_url, max_concurrency=1)
    requests = [ChatRequest(f"Split {n}.", json_schema=FACTS_SCHEMA) for n in range(3)]
    with caplog.at_level("WARNING", logger="factory.models.openai_engine"):
        replies = engine.complete(requests, GREEDY)
    assert [reply.text for reply in replies] == [f"echo: Split {n}." for n in range(3)]
    assert not engine.constrains_json  # the caller parses these leniently
    # one refused attempt, then every request without response_format
    sent = ["response_format" in attempt["body"] for attempt in state.attempts]
    assert sent == [True, False, False, False]
    warnings = [r for r in caplog.records if "refuses response_format" in r.getMessage()]
    assert len(warnings) == 1


def test_other_client_errors_on_a_schema_request_are_not_taken_for_a_refusal(state, base_url):
    state.failures = [Failure(400, "prompt is 9000 tokens, the model takes 4096")]
    engine = _engine(base_url)
    with pytest.raises(OpenAIServerError, match="9000 tokens"):
        engine.complete([ChatRequest("Long.", json_schema=FACTS_SCHEMA)], GREEDY)
    assert engine.constrains_json and len(state.attempts) == 1
