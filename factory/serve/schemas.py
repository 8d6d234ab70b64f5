"""Request bodies of the endpoints, as typed models (a wrong field is a 422 that names it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# vLLM and torch take seeds as signed 64-bit integers
INT64 = 2**63


class Catalogue(BaseModel):
    """Catalogue metadata a client may send with an image (the batch manifest's columns)."""

    model_config = ConfigDict(extra="forbid")

    object_id: str | None = None
    title: str | None = None
    creator: str | None = None
    date: str | None = None
    medium: str | None = None
    museum: str | None = None
    collection: str | None = None
    description: str | None = None


class ImageFields(BaseModel):
    """One image: `image` (base64 or a data URL), `image_url`, or a multipart file `image`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="base model or adapter name; None: the base")
    image: str | None = Field(None, description="base64 image bytes, or a data: URL")
    image_url: str | None = Field(None, description="http(s) URL or data: URL of the image")
    max_new_tokens: int | None = Field(None, ge=1, description="overrides the server default")


class CaptionRequest(ImageFields):
    style: str = Field("objective", description="objective, detailed or formal_analysis")
    catalogue: Catalogue | None = None
    critic: bool = Field(False, description="also return facts, verdicts and a rewrite")


class QARequest(ImageFields):
    question: str = Field(..., min_length=1, max_length=2000)


class ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class JsonSchemaFormat(BaseModel):
    """OpenAI's response_format.json_schema: a named JSON schema the reply must satisfy."""

    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's response_format: plain text, any JSON object, or JSON under a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type json_schema, and only there")
        return self

    def schema_for_request(self) -> dict[str, Any] | None:
        """The schema a ChatRequest carries: json_object is any object."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.json_schema is not None:
            return self.json_schema.json_schema
        return None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completions body this server honours.

    Fields it cannot honour (tools, several choices, logprobs) are refused by name instead
    of being silently ignored. Sampling parameters are held to the ranges both OpenAI and
    vLLM accept.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None

    def unsupported(self) -> list[str]:
        refused: list[str] = []
        if self.n != 1:
            refused.append("n (only one choice is generated)")
        extra: dict[str, Any] = self.model_extra or {}
        for name in ("tools", "functions", "logprobs", "top_logprobs", "logit_bias"):
            if extra.get(name):
                refused.append(name)
        return refused

    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
