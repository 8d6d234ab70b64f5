"""The ingress's request gatherer: concurrent single requests leave as one model call per
adapter and decoding setting, each client gets its own outcome, and a call whose clients
have all gone is cancelled. The model deployment's side is a recording stand-in in this
process (the gatherer is what is under test); over real HTTP the same path runs in
test_hostile_requests.py and test_app_tiny_model.py."""

from __future__ import annotations

import asyncio

import pytest

from factory.models.engine import ChatRequest, GenerationParams
from factory.serve.api_errors import ApiError
from factory.serve.request_gatherer import RequestGatherer

PARAMS = GenerationParams(max_new_tokens=4)


class Call:
    def __init__(self, adapter, requests, params):
        self.adapter, self.requests, self.params = adapter, requests, params
        self.replies: asyncio.Future = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def __await__(self):
        return self.replies.__await__()

    def cancel(self) -> None:
        self.cancelled = True

    def answer(self) -> None:
        """Each request's reply is its prompt; a prompt starting with 'refuse' is refused."""
        self.replies.set_result(
            [
                ApiError(400, "refused", request.prompt)
                if request.prompt.startswith("refuse")
                else f"{self.adapter}:{request.prompt}:{self.params.max_new_tokens}"
                for request in self.requests
            ]
        )


class RecordingModel:
    """`handle_for(adapter).generate_each.remote(requests, params)`, recorded."""

    def __init__(self, fail_with: Exception | None = None):
        self.calls: list[Call] = []
        self.fail_with = fail_with
        self.adapter = None

    def handle_for(self, adapter):
        self.adapter = adapter
        return self

    @property
    def generate_each(self):
        return self

    def remote(self, requests, params):
        if self.fail_with is not None:
            raise self.fail_with
        call = Call(self.adapter, requests, params)
        self.calls.append(call)
        return call


async def settle(model: RecordingModel, calls: int) -> None:
    while len(model.calls) < calls:
        await asyncio.sleep(0.01)


async def holding_first_call(model: RecordingModel, gatherer: RequestGatherer):
    """One request in flight, so later ones wait to gather (a lone request goes at once)."""
    first = asyncio.ensure_future(gatherer.generate(None, ChatRequest("first"), PARAMS))
    await settle(model, 1)
    assert [request.prompt for request in model.calls[0].requests] == ["first"]
    return first


def test_concurrent_requests_leave_as_one_call_and_each_gets_its_own_reply():
    async def scenario():
        model = RecordingModel()
        # a full batch leaves at once: the long wait is never reached
        gatherer = RequestGatherer(model.handle_for, max_batch_size=8, wait_s=60)
        first = await holding_first_call(model, gatherer)
        prompts = [f"p{index}" for index in range(8)]
        replies = asyncio.gather(
            *(gatherer.generate(None, ChatRequest(prompt), PARAMS) for prompt in prompts)
        )
        await settle(model, 2)
        call = model.calls[1]
        assert [request.prompt for request in call.requests] == prompts
        call.answer()
        model.calls[0].answer()
        assert await replies == [f"None:{prompt}:4" for prompt in prompts]
        assert await first == "None:first:4"

    asyncio.run(scenario())


def test_one_call_per_adapter_and_decoding_setting():
    async def scenario():
        model = RecordingModel()
        gatherer = RequestGatherer(model.handle_for, max_batch_size=8, wait_s=60)
        await holding_first_call(model, gatherer)
        wanted = [
            (adapter, tokens) for adapter in (None, "lora") for tokens in (4, 9) for _ in (0, 1)
        ]
        replies = asyncio.gather(
            *(
                gatherer.generate(
                    adapter, ChatRequest(f"p{index}"), GenerationParams(max_new_tokens=tokens)
                )
                for index, (adapter, tokens) in enumerate(wanted)
            )
        )
        await settle(model, 5)
        calls = model.calls[1:]
        assert sorted((str(call.adapter), call.params.max_new_tokens) for call in calls) == [
            ("None", 4),
            ("None", 9),
            ("lora", 4),
            ("lora", 9),
        ]
        assert all(len(call.requests) == 2 for call in calls)
        for call in calls:
            call.answer()
        assert await replies == [
            f"{adapter}:p{index}:{tokens}" for index, (adapter, tokens) in enumerate(wanted)
        ]

    asyncio.run(scenario())


def test_a_refused_request_fails_alone():
    async def scenario():
        model = RecordingModel()
        gatherer = RequestGatherer(model.handle_for, max_batch_size=3, wait_s=60)
        await holding_first_call(model, gatherer)
        replies = asyncio.gather(
            *(
                gatherer.generate(None, ChatRequest(prompt), PARAMS)
                for prompt in ("a", "refuse me", "b")
            ),
            return_exceptions=True,
        )
        await settle(model, 2)
        model.calls[1].answer()
        first, refused, last = await replies
        assert (first, last) == ("None:a:4", "None:b:4")
        assert isinstance(refused, ApiError) and refused.message == "refuse me"

    asyncio.run(scenario())


def test_a_call_that_fails_fails_each_of_its_requests():
    async def scenario():
        model = RecordingModel(fail_with=ConnectionError("replica lost"))
        gatherer = RequestGatherer(model.handle_for, max_batch_size=4, wait_s=0)
        with pytest.raises(ConnectionError, match="replica lost"):
            await gatherer.generate(None, ChatRequest("a"), PARAMS)

    asyncio.run(scenario())


def test_the_call_is_cancelled_once_every_client_has_gone():
    async def scenario():
        model = RecordingModel()
        gatherer = RequestGatherer(model.handle_for, max_batch_size=2, wait_s=60)
        await holding_first_call(model, gatherer)
        one, two = (
            asyncio.ensure_future(gatherer.generate(None, ChatRequest(prompt), PARAMS))
            for prompt in ("one", "two")
        )
        await settle(model, 2)
        call = model.calls[1]
        one.cancel()
        await asyncio.sleep(0.05)
        assert not call.cancelled  # a client is still waiting for it
        two.cancel()
        while not call.cancelled:
            await asyncio.sleep(0.01)
        assert not model.calls[0].cancelled

    asyncio.run(scenario())


def test_a_lone_burst_leaves_at_once_as_one_call():
    async def scenario():
        model = RecordingModel()
        # nothing in flight: no waiting, whatever the wait (the test would hang on it)
        gatherer = RequestGatherer(model.handle_for, max_batch_size=8, wait_s=600)
        replies = asyncio.gather(
            *(gatherer.generate(None, ChatRequest(prompt), PARAMS) for prompt in "abc")
        )
        await settle(model, 1)
        [call] = model.calls
        assert [request.prompt for request in call.requests] == ["a", "b", "c"]
        call.answer()
        assert await replies == ["None:a:4", "None:b:4", "None:c:4"]

    asyncio.run(scenario())


def test_clients_gone_before_the_call_leaves_send_nothing():
    async def scenario():
        model = RecordingModel()
        gatherer = RequestGatherer(model.handle_for, max_batch_size=8, wait_s=0.05)
        await holding_first_call(model, gatherer)
        waiting = [
            asyncio.ensure_future(gatherer.generate(None, ChatRequest(prompt), PARAMS))
            for prompt in ("one", "two")
        ]
        await asyncio.sleep(0)  # both join the waiting list
        for client in waiting:
            client.cancel()
        await asyncio.sleep(0.3)  # well past the wait
        assert len(model.calls) == 1

    asyncio.run(scenario())
