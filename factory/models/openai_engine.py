"""Chat generation through an OpenAI-compatible chat-completions server over HTTP.

For a remote `vllm serve` or the factory's own serving app: nothing loads locally (no
torch), so a CPU-only driver or actor can caption with a GPU fleet behind a URL. Each
request is one POST {base_url}/chat/completions; images travel as base64 JPEG data URLs,
downscaled first exactly as the local engines downscale them. Transient failures
(connection errors, timeouts, 429, 5xx) are retried with exponential backoff, honouring a
server's Retry-After; other 4xx mean the request itself is wrong and fail at once with
the server's message. A bounded thread pool keeps at most max_concurrency requests in
flight per engine.

A request with a `json_schema` goes as `response_format: {type: json_schema}` (strict),
which vLLM, SGLang and OpenAI decode under. A server that refuses response_format (a 4xx
naming it) gets the request again without it, and so do all later ones: the engine then
says it cannot constrain (`constrains_json` false), the caller parses leniently, and the
log says so once.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import requests

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    OpenAIOptions,
    check_adapters,
)
from factory.models.images import jpeg_data_url

log = logging.getLogger(__name__)

_REFUSES_SCHEMA = re.compile(r"response_format|json_schema|guided_json|structured", re.I)

_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # the connection dropped mid-answer
)


class OpenAIServerError(RuntimeError):
    """The server refused a request, or kept failing until the retries ran out."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class OpenAIEngine:
    """Sends each chat request to the configured server; answers come back in order."""

    def __init__(self, config: EngineConfig):
        if config.openai is None:  # EngineConfig refuses this for kind openai already
            raise ValueError("the openai engine needs openai.base_url")
        self.config = config
        self.options: OpenAIOptions = config.openai
        self.base_url = self.options.base_url.rstrip("/")
        self.headers = _auth_headers(self.options.api_key_env)
        # requests.Session is not documented as thread-safe: one per pool thread.
        self._local = threading.local()
        self.generated_tokens = 0  # running total from the servers' usage, for stage metrics
        self._count_lock = threading.Lock()
        self._schemas_refused = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=self.options.max_concurrency, thread_name_prefix="openai-engine"
        )
        self.info = EngineInfo(
            engine="openai",
            model=config.model,
            revision=config.revision or self._served_model_revision(),
        )

    @property
    def constrains_json(self) -> bool:
        """Whether json_schema requests are decoded under the schema (until a server
        refuses response_format)."""
        return not self._schemas_refused.is_set()

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One stripped completion per request, in request order."""
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        """Completions in request order, with the server's finish reasons and usage."""
        if not requests:
            return []
        check_adapters(requests, self.config)
        futures = [self._pool.submit(self._complete, request, params) for request in requests]
        try:
            return [future.result() for future in futures]
        finally:
            # after a failure, requests not yet sent are dropped rather than sent for nothing
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Stop the worker threads (after the requests in flight)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, request: ChatRequest, params: GenerationParams) -> Completion:
        answer = self._post(request, params)
        try:
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise OpenAIServerError(
                f"{self.base_url}/chat/completions answered without choices[0].message."
                f"content: {str(answer)[:300]}"
            ) from error
        usage = answer.get("usage") or {}
        completion_tokens = _count(usage.get("completion_tokens"))
        with self._count_lock:
            self.generated_tokens += completion_tokens or 0
        return Completion(
            text=(content or "").strip(),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=completion_tokens,
        )

    def _post(self, request: ChatRequest, params: GenerationParams) -> Any:
        body = self._body(request, params)
        if request.json_schema is None or self._schemas_refused.is_set():
            return self._call("POST", "/chat/completions", body)
        try:
            return self._call(
                "POST", "/chat/completions", {**body, **_response_format(request.json_schema)}
            )
        except OpenAIServerError as error:
            refused = error.status is not None and 400 <= error.status < 500
            if not (refused and _REFUSES_SCHEMA.search(str(error))):
                raise
            if not self._schemas_refused.is_set():
                self._schemas_refused.set()
                log.warning(
                    "%s refuses response_format json_schema (%s); asking in the prompt only "
                    "and parsing replies leniently from now on",
                    self.base_url,
                    error,
                )
        return self._call("POST", "/chat/completions", body)

    def _body(self, request: ChatRequest, params: GenerationParams) -> dict[str, Any]:
        content: str | list[dict[str, Any]] = request.prompt
        if request.image is not None:
            url = jpeg_data_url(request.image, self.config.max_image_side)
            content = [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": request.prompt},
            ]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        return {
            # vLLM serves each LoRA adapter under its own model name.
            "model": request.adapter or self.config.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,  # 0: greedy on vLLM and OpenAI alike
            "top_p": params.top_p,
            "seed": params.seed,
        }

    def _served_model_revision(self) -> str:
        """What the server says it serves under config.model: its weights path, or the name."""
        listing = self._call("GET", "/models")
        served = {entry.get("id"): entry for entry in listing.get("data", [])}
        entry = served.get(self.config.model)
        if entry is None:
            raise ValueError(
                f"{self.base_url} does not serve model {self.config.model!r}; it serves "
                f"{sorted(str(name) for name in served)}"
            )
        # vLLM reports the weights it loaded as `root`; other servers only the name.
        return str(entry.get("root") or entry["id"])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call with retries on transient failures; the decoded JSON answer."""
        url = f"{self.base_url}{path}"
        attempts = self.options.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._session().request(
                    method, url, json=body, headers=self.headers, timeout=self.options.timeout_s
                )
            except _TRANSIENT_ERRORS as error:
                if attempt == attempts:
                    raise OpenAIServerError(
                        f"{method} {url} failed {attempts} times (timeout "
                        f"{self.options.timeout_s:g} s each); last error: {error}"
                    ) from error
                time.sleep(self._backoff(attempt))
                continue
            if response.ok:
                return _json(response, url)
            status, message = response.status_code, _error_message(response)
            if not _is_transient(status):
                raise OpenAIServerError(f"{url} refused the request ({status}): {message}", status)
            if attempt == attempts:
                raise OpenAIServerError(
                    f"{url} still failing after {attempts} attempts ({status}): {message}", status
                )
            wait = _retry_after_s(response.headers.get("Retry-After"))
            time.sleep(self._backoff(attempt) if wait is None else wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int) -> float:
        return min(self.options.backoff_s * 2 ** (attempt - 1), self.options.backoff_max_s)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output request field; the name is the schema's title."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
    }


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def _auth_headers(api_key_env: str | None) -> dict[str, str]:
    if api_key_env is None:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise ValueError(
            f"openai.api_key_env names {api_key_env!r}, but that environment variable is "
            "unset or empty"
        )
    return {"Authorization": f"Bearer {key}"}


def _is_transient(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after_s(header: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date; None if absent or unreadable."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_message(response: requests.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, FastAPI's detail, or text."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if payload.get(key):
                return str(payload[key])
    return str(payload)[:500]


def _json(response: requests.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError as error:
        raise OpenAIServerError(
            f"{url} answered {response.status_code} with non-JSON: {response.text[:300]}",
            response.status_code,
        ) from error
