"""ASGI middleware bounding the request body: its size, and how long its pieces take.

A declared length over the limit is answered 413 before any byte is read; a chunked or
lying body raises BodyTooLarge from `receive` once it passes the limit, which the app's
error handler turns into the same 413. A client that goes silent mid-upload (declares
5,000 bytes, sends 11) gets a JSON 408 once no piece arrived for `read_timeout_s`,
instead of holding the connection until the proxy's own (plain-text) timeout.

Malformed HTTP itself (a bad Content-Length, an unknown method, Content-Length together
with Transfer-Encoding) never reaches this app: Ray Serve's proxy (uvicorn and h11)
answers it with a plain-text 400 before any ASGI app runs, and Serve offers no hook there.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from factory.serve.api_errors import ApiError


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"body over {limit} bytes")
        self.limit = limit

    def api_error(self) -> ApiError:
        return ApiError(
            413, "body_too_large", f"the request body is larger than {self.limit:,} bytes"
        )


class BodyStalled(Exception):
    def __init__(self, timeout_s: float):
        super().__init__(f"no body bytes for {timeout_s:g} s")
        self.timeout_s = timeout_s

    def api_error(self) -> ApiError:
        return ApiError(
            408,
            "body_timeout",
            f"the request body stalled: nothing arrived for {self.timeout_s:g} s",
            None,
            {"Connection": "close"},
        )


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int, read_timeout_s: float):
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            problem = self._declared_problem(declared)
            if problem is not None:
                await _answer(send, problem)
                return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except asyncio.TimeoutError:
                raise BodyStalled(self.read_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _declared_problem(self, declared: bytes) -> ApiError | None:
        try:
            length = int(declared)
        except ValueError:
            return ApiError(400, "invalid_content_length", "Content-Length is not a number")
        return BodyTooLarge(self.max_bytes).api_error() if length > self.max_bytes else None


async def _answer(send: Any, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
