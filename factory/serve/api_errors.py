"""The one error type the HTTP layer answers with, in OpenAI's error body shape.

`{"error": {"message": ..., "type": ..., "code": ..., "param": ...}}` is what the official
`openai` client parses into its exceptions, so every endpoint uses it, not only /v1/chat.
"""

from __future__ import annotations

from typing import Any

# status -> OpenAI's `type` for it; the `code` names the exact problem.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """An HTTP error answer: status, a stable `code`, a message a person can act on."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.param, self.headers = param, headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # raised in a model replica, it crosses to the ingress by pickle
        return (ApiError, (self.status, self.code, self.message, self.param, self.headers))

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "server_error"),
                "code": self.code,
                "param": self.param,
            }
        }


def overloaded(why: str, retry_after_s: int) -> ApiError:
    """The 503 of backpressure: the client should come back after `retry_after_s`."""
    return ApiError(
        503, "overloaded", f"{why}; retry later", None, {"Retry-After": str(retry_after_s)}
    )
