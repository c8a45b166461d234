"""One request through an upstream engine: the same checks and framing as the embedded engine.

The request is validated by our schema first (same 400s), gets the default system prompt and a
default `max_tokens`, and goes to the engine without the client's key. What can be retried is
retried once on another engine: a transport error, a 5xx or a 429 before anything reached the
client (for a stream: before its first event arrived). After that the stream is passed through
event by event; if the engine breaks mid-answer the client gets an SSE error event and the audit
line says `upstream_error`: two half-answers from two engines are never joined.

The engine is not trusted more than a client: it gets only the fields sm70 documents, its bodies and
stream lines are read up to a cap, its `usage` counts are used only when they are counts, and its
401/403 (which may echo the credential it was sent) never reaches the client in its own words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import AsyncIterator

import httpx

from sm70.serve.guard.audit import AuditRecord
from sm70.serve.api.protocol import ChatRequest, Request, error_body, usage
from sm70.serve.api.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT, HTTPError
from sm70.serve.gateway.pool import Pool, Upstream

BROKEN = ("the engine answering this request failed part-way; the answer above is incomplete, do not rely "
          "on it; ask again")
# What an engine may send: a whole answer or error body, and one line of a stream. Past that the engine
# is failed: a broken or hostile engine must not make the gateway hold its output in memory.
MAX_BODY = 8 << 20
MAX_LINE = 1 << 20
REFUSED = "refused the gateway's credential for it (HTTP {status}): the operator must check upstream_key"


class EngineOverflow(ValueError):
    """An engine sent more than a body or a line may hold."""


async def bounded_lines(response: httpx.Response, limit: int) -> AsyncIterator[str]:
    """The body's lines (LF or CRLF), none longer than `limit` bytes; raises EngineOverflow."""
    pending = b""
    async for chunk in response.aiter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if len(line) > limit:
                raise EngineOverflow(f"a line over {limit} bytes")
            yield line.rstrip(b"\r").decode()
        if len(pending) > limit:
            raise EngineOverflow(f"a line over {limit} bytes")
    if pending:
        yield pending.rstrip(b"\r").decode()


async def bounded_body(response: httpx.Response, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; raises EngineOverflow."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise EngineOverflow(f"a body of {declared} bytes (over {limit})")
    parts, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise EngineOverflow(f"a body over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def valid_usage(use) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from an engine's `usage`, or None if it is not two counts."""
    if not isinstance(use, dict):
        return None
    counts = use.get("prompt_tokens"), use.get("completion_tokens")
    if all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 31 for n in counts):
        return counts
    return None


def forwarded(req: Request) -> dict:
    """The request as the engine gets it: only the fields sm70 documents (protocol.py), so that an
    engine-specific knob (`logit_bias`, `best_of`, `lora_request` with a path) never reaches it."""
    known = type(req).model_fields
    data = {k: v for k, v in req.model_dump(exclude_unset=True).items() if k in known}
    if "messages" in data:
        data["messages"] = [{"role": m["role"], "content": m["content"]} for m in data["messages"]]
    return data


class Retry(Exception):
    """This engine failed before the client saw anything: another may answer."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Lease:
    """One request's hold on an engine's slot: taken once, given back exactly once, so that the
    engine's outstanding count (least-outstanding balancing, `/ready`) cannot drift."""

    def __init__(self, up: Upstream):
        self.up, self.held = up, True
        up.outstanding += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.up.outstanding -= 1


class Call:
    """An open streamed answer from one engine: the events still to read, and the slot it holds."""

    def __init__(self, lease: Lease, response: httpx.Response):
        self.lease, self.up, self.response = lease, lease.up, response
        self.lines = bounded_lines(response, MAX_LINE)
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
            self.lease.release()
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
    extra_body: dict = field(default_factory=dict)   # added to every forwarded body (llama_server.py's cache policy)

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
        data = {**forwarded(req), **self.extra_body}
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
            self.engine.fail(up, type(e).__name__, unreachable=isinstance(e, httpx.ConnectError))
            raise Retry(502, f"{up.name}: {type(e).__name__}") from None
        status = response.status_code
        if status < 400:
            return response
        body = await _read_quietly(response)
        if status in (401, 403):
            # Never the engine's words: an engine's 401 may echo the credential it was sent.
            self.engine.fail(up, REFUSED.format(status=status))
            raise Retry(502, f"{up.name}: " + REFUSED.format(status=status))
        if status >= 500 or status == 429:
            if status >= 500:
                self.engine.fail(up, f"HTTP {status}")
            raise Retry(503 if status in (429, 503) else 502, f"{up.name}: HTTP {status}")
        message, type_, param = _error_of(body, status)
        raise HTTPError(status, message, type_, param)

    async def _attempt(self, path: str, data: dict, model: str, record: AuditRecord, opener):
        """Up to two engines; `opener(lease, response)` turns an open response into the result and
        owns the lease from then on (a stream holds it until it closes)."""
        tried: list[Upstream] = []
        status, why = 503, "no upstream engine serving this model is answering"
        for _ in range(2):
            up = self.engine.pick(model, tried)
            if up is None:
                break
            tried.append(up)
            lease, response = Lease(up), None
            try:
                response = await self._send(up, path, data)
                result = await opener(lease, response)
            except Retry as e:
                status, why = e.status, str(e)
                if response is not None:
                    await response.aclose()
                lease.release()
                continue
            except BaseException:
                if response is not None:
                    await response.aclose()
                lease.release()
                raise
            self.engine.succeed(up)
            record.upstream = up.name
            return result
        record.outcome = "upstream_unavailable"
        raise HTTPError(status, f"no upstream engine could answer ({why}); retry later", "server_error",
                        headers={"Retry-After": "2"})

    async def complete(self, req: Request, record: AuditRecord) -> dict:
        data, model, chat = self.payload(req, record)

        async def opener(lease: Lease, response: httpx.Response) -> dict:
            up = lease.up
            try:
                answer = json.loads(await bounded_body(response, MAX_BODY))
                choice = answer["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
                if not isinstance(text, str) and text is not None:
                    raise TypeError("the answer's text is not a string")
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                self.engine.fail(up, f"a broken answer ({type(e).__name__})")
                raise Retry(502, f"{up.name}: a broken answer ({type(e).__name__})") from None
            await response.aclose()
            lease.release()
            counts = valid_usage(answer.get("usage"))
            answer.pop("usage", None)
            if counts is not None:
                record.prompt_tokens, record.completion_tokens = counts
                answer["usage"] = usage(*counts)
            record.outcome = "ok"
            if self.keep_text:
                record.completion = [text or ""]
            answer["disclaimer"] = self.disclaimer
            return answer

        return await self._attempt("/chat/completions" if chat else "/completions", data, model, record, opener)

    async def start(self, req: Request, record: AuditRecord) -> tuple[Call, str, bool]:
        data, model, chat = self.payload(req, record)

        async def opener(lease: Lease, response: httpx.Response) -> Call:
            up, call = lease.up, Call(lease, response)
            try:
                first = await call.next_data()
            except (httpx.HTTPError, ValueError) as e:
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
                counts = valid_usage(use)
                use = usage(*counts) if counts is not None else None
                if counts is not None:
                    record.prompt_tokens, record.completion_tokens = counts
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
                    if choice.get("finish_reason"):
                        event.update(req.final_fields())   # rag='s citations (api/grounding.py)
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
        return await bounded_body(response, MAX_BODY)
    except (httpx.HTTPError, EngineOverflow):
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
