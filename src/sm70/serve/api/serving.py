"""Serving logic shared by the chat and completion endpoints: request -> prompt -> engine -> reply.

Everything here is independent of the router: it checks the request against the served models and
the context limit, submits it, and turns the engine's events into an OpenAI object or an SSE
stream, filling the request's audit record as it goes. Building and tokenizing the prompt runs in
a worker thread (at most `PREP_SLOTS` at once): a 4 MiB prompt must not stall every other client.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import AsyncIterator

from sm70.serve.guard.audit import AuditRecord

from sm70.serve.engines.handle import Handle, QueueFull
from sm70.serve.api.protocol import (ChatRequest, Request, chat_chunk, chat_response,
                                 completion_chunk, completion_response, error_body, new_id, usage)
from sm70.serve.engines.sampling import SamplingParams

DEFAULT_SYSTEM_PROMPT = (
    "You are a clinical decision-support assistant for licensed clinicians. Answer concisely and "
    "cite the reasoning. You are not a substitute for clinical judgement: say when information is "
    "insufficient, flag urgent findings, and never present a guess as a diagnosis."
)
DEFAULT_DISCLAIMER = (
    "Decision support for clinicians only; not a certified medical device. Verify every answer "
    "against current guidelines and the patient's record."
)


PREP_SLOTS = 2


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


@dataclass
class Service:
    engine: object
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    disclaimer: str = DEFAULT_DISCLAIMER
    default_max_tokens: int = 512
    keep_text: bool = False              # audit_content: hand the texts to the audit record (scrubbed there)
    retry_after_s: int = 2
    prep_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PREP_SLOTS))

    @property
    def problem(self) -> str | None:
        """Why the engine cannot answer now (a vLLM engine that died), shown by /health and /ready."""
        return getattr(self.engine, "problem", None)

    # -- checks ----------------------------------------------------------------------------------
    def model_id(self, requested: str | None) -> str:
        if requested is None:
            return self.engine.model_ids[0]
        if requested not in self.engine.model_ids:
            raise HTTPError(404, f"model {requested!r} is not served here; served: {self.engine.model_ids}",
                            "not_found_error", "model")
        return requested

    def chat_prompt(self, req: ChatRequest) -> str:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in req.messages]
        if self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        tok = self.engine.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # a base model without a chat template: a plain transcript it can continue
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"

    def encode(self, text: str, chat: bool) -> list[int]:
        # a chat template already writes the BOS token; a raw completion prompt gets the tokenizer's own
        return self.engine.tokenizer(text, add_special_tokens=not chat)["input_ids"]

    def params(self, req: Request, prompt_len: int) -> SamplingParams:
        limit = self.engine.max_context
        if prompt_len >= limit:
            raise HTTPError(400, f"the prompt is {prompt_len} tokens; this model's context limit is {limit} "
                                 f"tokens (prompt + completion)",
                            param="messages" if isinstance(req, ChatRequest) else "prompt")
        room = limit - prompt_len
        wanted = req.token_limit()
        if wanted is not None and wanted > room:
            raise HTTPError(400, f"max_tokens={wanted} does not fit: the prompt is {prompt_len} tokens and the "
                                 f"context limit is {limit} tokens, so at most {room} can be generated",
                            param="max_tokens")
        return SamplingParams(max_tokens=wanted or min(room, self.default_max_tokens),
                              temperature=req.temperature, top_p=req.top_p, stop=req.stops(),
                              seed=req.seed, ignore_eos=req.ignore_eos)

    def submit(self, ids: list[int], params: SamplingParams, model: str, record: AuditRecord) -> Handle:
        if (problem := self.problem) is not None:
            record.outcome = "engine_error"
            raise HTTPError(503, problem, "server_error")
        try:
            handle = self.engine.submit(ids, params, model)
        except QueueFull as e:
            raise HTTPError(429, f"server busy: {e}; retry after {self.retry_after_s} s", "rate_limit_error",
                            headers={"Retry-After": str(self.retry_after_s)}) from None
        record.cancel = handle.cancel   # the gate frees the slot if the client leaves
        return handle

    # -- one request -----------------------------------------------------------------------------
    def prepare(self, req: Request, record: AuditRecord) -> tuple[list[int], SamplingParams, str, bool]:
        """Prompt, token ids and sampling parameters: the CPU-heavy part, run off the event loop."""
        chat = isinstance(req, ChatRequest)
        model = self.model_id(req.model)
        prompt = self.chat_prompt(req) if chat else req.prompt
        ids = self.encode(prompt, chat)
        record.model, record.prompt_tokens = model, len(ids)
        params = self.params(req, len(ids))
        if self.keep_text:
            record.prompt = prompt
        return ids, params, model, chat

    async def start(self, req: Request, record: AuditRecord) -> tuple[Handle, str, bool]:
        async with self.prep_slots:
            ids, params, model, chat = await asyncio.to_thread(self.prepare, req, record)
        if record.reserve is not None:   # the key's tpm: its exact prompt and its most answer tokens
            await record.reserve(len(ids) + params.max_tokens)
        # submitted from the loop's thread: the handle delivers its events to this loop
        return self.submit(ids, params, model, record), model, chat

    async def complete(self, req: Request, record: AuditRecord) -> dict:
        handle, model, chat = await self.start(req, record)
        parts: list[str] = []
        async for ev in handle.events():
            if ev.kind == "delta":
                parts.append(ev.text)
                record.completion_tokens = ev.completion_tokens
            elif ev.kind == "error":
                record.outcome = "engine_error"
                raise HTTPError(503, ev.text, "server_error")
            else:
                text = "".join(parts)
                self._finish_record(record, parts, ev.completion_tokens)
                build = chat_response if chat else completion_response
                return build(new_id("chatcmpl" if chat else "cmpl"), model, text, ev.finish_reason,
                             usage(ev.prompt_tokens, ev.completion_tokens), self.disclaimer)
        raise HTTPError(503, "the engine stopped before finishing", "server_error")

    async def sse(self, req: Request, handle: Handle, model: str, chat: bool,
                  record: AuditRecord) -> AsyncIterator[str]:
        rid = new_id("chatcmpl" if chat else "cmpl")
        parts: list[str] = []
        if self.keep_text:
            record.completion = parts    # what was sent so far, if the client cuts the stream
        if chat:
            yield _sse(chat_chunk(rid, model, {"role": "assistant", "content": ""}, disclaimer=self.disclaimer))
        async for ev in handle.events():
            if ev.kind == "delta":
                parts.append(ev.text)
                record.completion_tokens = ev.completion_tokens
                yield _sse(chat_chunk(rid, model, {"content": ev.text}) if chat
                           else completion_chunk(rid, model, ev.text))
            elif ev.kind == "error":
                record.outcome = "engine_error"
                yield _sse(error_body(ev.text, "server_error"))
            else:
                self._finish_record(record, parts, ev.completion_tokens)
                extra = {} if chat else {"disclaimer": self.disclaimer}
                yield _sse(chat_chunk(rid, model, {}, ev.finish_reason, **req.final_fields()) if chat
                           else completion_chunk(rid, model, "", ev.finish_reason, **extra))
                if req.include_usage():
                    use = usage(ev.prompt_tokens, ev.completion_tokens)
                    yield _sse({**(chat_chunk(rid, model, {}) if chat else completion_chunk(rid, model, "")),
                                "choices": [], "usage": use})
        yield "data: [DONE]\n\n"

    def _finish_record(self, record: AuditRecord, parts: list[str], completion_tokens: int) -> None:
        record.completion_tokens = completion_tokens
        record.outcome = "ok"
        if self.keep_text:
            record.completion = parts


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
