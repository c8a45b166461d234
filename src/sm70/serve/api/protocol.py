"""The OpenAI wire format: request and response objects for the endpoints we serve.

Requests are validated strictly (a wrong type is a 400 naming the field); unknown fields that
OpenAI clients send and we do not act on (`user`, `n=1`, `logprobs=null`, ...) are accepted and
ignored, as OpenAI's own server does. Every completion object carries one extra field,
`disclaimer`, which OpenAI clients ignore; a server with `rag=` adds `citations` to a chat answer
(the whole object, or a stream's chunk with the finish_reason).

Sampling parameters are checked against what the sampler can do, because one request's bad value
must fail that request, not the batch it would share: `seed` fits torch's 64-bit generator,
temperature and top_p are finite (tiny values are handled in `sampling`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator


class Request(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1, le=1)
    ignore_eos: bool = False   # vLLM's extra parameter: fixed-length outputs for benchmarks
    # Fields the server adds to the answer's last object (rag='s `citations`): set by sm70 only; a
    # client's `_final` lands in the extra fields, never here.
    _final: dict = PrivateAttr(default_factory=dict)

    def final_fields(self) -> dict:
        return self._final

    def set_final_fields(self, **fields) -> None:
        self._final = {**self._final, **fields}

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return stops

    def stops(self) -> tuple[str, ...]:
        return tuple(self.stop or ())

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatRequest(Request):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("exactly one prompt per request")
            return v[0]
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens).model_dump()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_response(rid: str, model: str, text: str, finish: str, use: dict, disclaimer: str) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": use, "disclaimer": disclaimer}


def chat_chunk(rid: str, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}


def completion_response(rid: str, model: str, text: str, finish: str, use: dict, disclaimer: str) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": use, "disclaimer": disclaimer}


def completion_chunk(rid: str, model: str, text: str, finish: str | None = None, **extra) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], **extra}


def sse_event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error answer, in OpenAI's shape (documented in the schema for each status we send)."""
    error: ErrorDetail


# The statuses each kind of route answers besides 200, as the OpenAPI schema documents them.
_WHY = {400: "invalid request (the message names the field)", 401: "missing, invalid or expired API key",
        404: "unknown model or file", 413: "body or prompt over the limit", 421: "Host not served here",
        429: "rate limit, token quota or full queue (see Retry-After)",
        502: "the engine failed before answering (upstream mode)",
        503: "no engine available, or the audit log cannot be written (see Retry-After)"}


def documented(*statuses: int) -> dict:
    return {s: {"model": ErrorResponse, "description": _WHY[s]} for s in statuses}


API_ERRORS = documented(400, 401, 404, 413, 421, 429, 502, 503)
READ_ERRORS = documented(401, 413, 421, 429, 503)
