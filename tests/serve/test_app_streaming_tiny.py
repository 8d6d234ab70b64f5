"""Streaming and usage on the real tiny LLaVA (transformers engine, no adapters), with the
official `openai` client over HTTP on 127.0.0.1: the chunks are the engine's tokens."""

from __future__ import annotations

import openai
import pytest

from tests.serve.apps import running_app, serve_config

MODEL = "tiny-llava"


@pytest.fixture(scope="module")
def client(serve_ray):
    config = serve_config(generation={"max_new_tokens": 8}, limits={"max_new_tokens": 64})
    with running_app(config) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_stream_sends_the_reply_token_by_token(client):
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Describe a horse."}]}
    # greedy and long enough to run out of tokens: the random model rarely ends by itself
    whole = client.chat.completions.create(**ask, max_tokens=12)
    stream = client.chat.completions.create(
        **ask, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2  # several chunks, not the whole text at once
    assert "".join(pieces).strip() == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert finish == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert whole.usage.prompt_tokens > 0


def test_finish_reason_length_when_the_budget_runs_out(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a horse."}], max_tokens=2
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 2
