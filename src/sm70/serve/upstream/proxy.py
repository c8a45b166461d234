"""One request through an upstream engine: the same checks and framing as the embedded engine.

The request is validated by our schema first (same 400s), gets the default system prompt and a
default `max_tokens`, and goes to the engine without the client's key. What can be retried is
retried once on another engine: a transport error, a 5xx or a 429 before anything reached the
client (for a stream: before its first event arrived). After that the stream is passed through
event by event; if the engine breaks mid-answer the client gets an SSE error event and the audit
line says `upstream_error`: two half-answers from two engines are never joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import AsyncIterator

import httpx

from sm70.serve.audit import AuditRecord
from sm70.serve.protocol import ChatRequest, Request, error_body
from sm70.serve.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT, HTTPError
from sm70.serve.upstream.pool import Pool, Upstream

BROKEN = ("the engine answering this request failed part-way; the answer above is incomplete, do not rely "
          "on it; ask again")


class Retry(Exception):
    """This engine failed before the client saw anything: another may answer."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Call:
    """An open streamed answer from one engine: the events still to read, and the slot it holds."""

    def __init__(self, pool: Pool, up: Upstream, response: httpx.Response):
        self.pool, self.up, self.response = pool, up, response
        self.lines = response.aiter_lines()
        self.first: str | None = None
        self.closed = False

    async def next_data(self) -> str | None:
        """The next `data:` payload, or None at the end of the body."""
        async for line in self.lines:
            if line.startswith("data:"):
                return line[5:].strip()
        return None

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.up.outstanding -= 1
            await self.response.aclose()

    def cancel(self) -> None:
        if not self.closed:
            with contextlib.suppress(RuntimeError):   # no running loop: the server is going down
                asyncio.get_running_loop().create_task(self.close())


@dataclass
class ProxyService:
    engine: Pool
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    disclaimer: str = DEFAULT_DISCLAIMER
    default_max_tokens: int = 512
    keep_text: bool = False

    @property
    def problem(self) -> str | None:
        return self.engine.problem

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        await self.engine.start()
        try:
            yield
        finally:
            await self.engine.stop()

    # -- the request -----------------------------------------------------------------------------
    def payload(self, req: Request, record: AuditRecord) -> tuple[dict, str, bool]:
        chat = isinstance(req, ChatRequest)
        served = self.engine.model_ids
        if not served:
            raise HTTPError(503, self.problem or "no upstream engine is answering", "server_error",
                            headers={"Retry-After": "2"})
        model = req.model or served[0]
        if model not in served:
            raise HTTPError(404, f"model {model!r} is not served here; served: {served}", "not_found_error", "model")
        data = req.model_dump(exclude_unset=True)
        data["model"] = model
        if chat:
            messages = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in data["messages"]]
            if self.system_prompt and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            data["messages"] = messages
        if req.token_limit() is None:
            data["max_tokens"] = self.default_max_tokens
        if req.stream:
            # the engine's own count at the end where it gives one; a cut stream is counted by its deltas.
            # (vLLM's `continuous_usage_stats` would count every chunk, but llama.cpp's server ends the
            # stream after its first event when it meets that field.)
            data["stream_options"] = {"include_usage": True}
        record.model = model
        if self.keep_text:
            record.prompt = ("".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in data["messages"])
                             if chat else data["prompt"])
        return data, model, chat

    async def _send(self, up: Upstream, path: str, data: dict) -> httpx.Response:
        """The engine's response, headers read; raises Retry or the engine's own 4xx."""
        client = self.engine.client
        request = client.build_request("POST", up.url + path, json=data, headers=self.engine.headers)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as e:
            self.engine.fail(up, type(e).__name__)
            raise Retry(502, f"{up.name}: {type(e).__name__}") from None
        if response.status_code < 400:
            return response
        body = await _read_quietly(response)
        if response.status_code >= 500 or response.status_code == 429:
            if response.status_code >= 500:
                self.engine.fail(up, f"HTTP {response.status_code}")
            raise Retry(503 if response.status_code in (429, 503) else 502, f"{up.name}: HTTP {response.status_code}")
        message, type_, param = _error_of(body, response.status_code)
        raise HTTPError(response.status_code, message, type_, param)

    async def _attempt(self, path: str, data: dict, model: str, record: AuditRecord, opener):
        """Up to two engines; `opener(up, response)` turns an open response into the result."""
        tried: list[Upstream] = []
        status, why = 503, "no upstream engine serving this model is answering"
        for _ in range(2):
            up = self.engine.pick(model, tried)
            if up is None:
                break
            tried.append(up)
            up.outstanding += 1
            response = None
            try:
                response = await self._send(up, path, data)
                result = await opener(up, response)
            except Retry as e:
                status, why = e.status, str(e)
                if response is not None:
                    await response.aclose()
                up.outstanding -= 1
                continue
            except BaseException:
                if response is not None:
                    await response.aclose()
                up.outstanding -= 1
                raise
            up.served += 1
            record.upstream = up.name
            return result
        record.outcome = "upstream_unavailable"
        raise HTTPError(status, f"no upstream engine could answer ({why}); retry later", "server_error",
                        headers={"Retry-After": "2"})

    async def complete(self, req: Request, record: AuditRecord) -> dict:
        data, model, chat = self.payload(req, record)

        async def opener(up: Upstream, response: httpx.Response) -> dict:
            try:
                answer = json.loads(await response.aread())
                choice = answer["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                self.engine.fail(up, f"a broken answer ({type(e).__name__})")
                raise Retry(502, f"{up.name}: a broken answer") from None
            await response.aclose()
            up.outstanding -= 1
            use = answer.get("usage") or {}
            record.prompt_tokens = use.get("prompt_tokens", 0)
            record.completion_tokens = use.get("completion_tokens", 0)
            record.outcome = "ok"
            if self.keep_text:
                record.completion = [text or ""]
            answer["disclaimer"] = self.disclaimer
            return answer

        return await self._attempt("/chat/completions" if chat else "/completions", data, model, record, opener)

    async def start(self, req: Request, record: AuditRecord) -> tuple[Call, str, bool]:
        data, model, chat = self.payload(req, record)

        async def opener(up: Upstream, response: httpx.Response) -> Call:
            call = Call(self.engine, up, response)
            try:
                first = await call.next_data()
            except httpx.HTTPError as e:
                self.engine.fail(up, type(e).__name__)
                raise Retry(502, f"{up.name}: {type(e).__name__}") from None
            if first is None or first == "[DONE]" or '"error"' in first[:20]:
                self.engine.fail(up, "the stream ended before its first event")
                raise Retry(502, f"{up.name}: no first event")
            call.first = first
            return call

        call = await self._attempt("/chat/completions" if chat else "/completions", data, model, record, opener)
        record.cancel = call.cancel   # the gate frees the engine's slot if the client leaves
        return call, model, chat

    async def sse(self, req: Request, call: Call, model: str, chat: bool,
                  record: AuditRecord) -> AsyncIterator[str]:
        parts: list[str] = []
        if self.keep_text:
            record.completion = parts    # what was sent so far, if the client cuts the stream
        deltas, first, finished, tail = 0, True, False, ""
        try:
            data = call.first
            while data is not None and data != "[DONE]":
                event = json.loads(data)
                if not isinstance(event, dict) or "error" in event:
                    raise ValueError("an error event")
                use = event.pop("usage", None)
                if use:
                    record.prompt_tokens = use.get("prompt_tokens", record.prompt_tokens)
                    record.completion_tokens = use.get("completion_tokens", record.completion_tokens)
                choices = event.get("choices") or []
                if choices:
                    choice = choices[0]
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if text:
                        parts.append(text)
                        deltas += 1
                        if not use:
                            record.completion_tokens = max(record.completion_tokens, deltas)
                    if first or (choice.get("finish_reason") and not chat):
                        event["disclaimer"] = self.disclaimer
                    first = False
                    finished = finished or bool(choice.get("finish_reason"))
                    yield _sse(event)
                elif use and req.include_usage():
                    yield _sse({**event, "usage": use})
                data = await call.next_data()
            if not finished:  # a clinician must not take a cut answer for a whole one
                raise ValueError("the stream ended without [DONE]" if data is None else "[DONE] before a finish_reason")
            record.outcome = "ok"
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            record.outcome = "upstream_error"
            self.engine.fail(call.up, f"broke mid-stream ({type(e).__name__})")
            # one body with `[DONE]`: the gate writes the closing line before the client can read either
            tail = _sse(error_body(BROKEN, "server_error", code="upstream_error"))
        finally:
            await call.close()
        yield tail + "data: [DONE]\n\n"


async def _read_quietly(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


def _error_of(body: bytes, status: int) -> tuple[str, str, str | None]:
    """The engine's own 4xx message (a prompt over its context limit, say), in our error shape."""
    try:
        err = json.loads(body)["error"]
        if isinstance(err, dict):
            return (str(err.get("message", ""))[:2000] or f"HTTP {status}", str(err.get("type") or
                    "invalid_request_error"), err.get("param") if isinstance(err.get("param"), str) else None)
        return str(err)[:2000], "invalid_request_error", None
    except (ValueError, KeyError, TypeError):
        return f"the engine refused the request (HTTP {status})", "invalid_request_error", None


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
