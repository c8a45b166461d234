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

Per event the gateway does what it must and no more: each event is parsed (text, finish_reason,
usage), but only the ones sm70 changes are encoded again; the rest leave as the engine's bytes. A
key with a tpm holds the request's most tokens before an engine sees it (`prompt_bound`, as there is
no tokenizer here) and is charged the engine's count at the end, or sm70's own without one.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp

from sm70.serve.engines.slots import SlotBook
from sm70.serve.guard.audit import AuditRecord
from sm70.serve.api.protocol import ChatRequest, Request, error_body, usage
from sm70.serve.api.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT, HTTPError
from sm70.serve.gateway.pool import Pool, Upstream

BROKEN = ("the engine answering this request failed part-way; the answer above is incomplete, do not rely "
          "on it; ask again")
# What breaks an engine's answer on the way: the connection (reset, refused, a chunked body cut short,
# no bytes within upstream_timeout_s).
TRANSPORT = (aiohttp.ClientError, TimeoutError)
# What an engine may send: a whole answer or error body, and one line of a stream. Past that the engine
# is failed: a broken or hostile engine must not make the gateway hold its output in memory.
MAX_BODY = 8 << 20
MAX_LINE = 1 << 20
JSON = "application/json"
REFUSED = "refused the gateway's credential for it (HTTP {status}): the operator must check upstream_key"


class EngineOverflow(ValueError):
    """An engine sent more than a body or a line may hold."""


async def bounded_lines(response: aiohttp.ClientResponse, limit: int) -> AsyncIterator[list[bytes]]:
    """The body's lines (LF or CRLF, without either), in the batches the reads bring them, none longer
    than `limit` bytes; raises EngineOverflow. Bytes, not text: most lines go on to the client as they
    came, so decoding them here would be work thrown away."""
    pending = b""
    async for chunk in response.content.iter_any():
        *lines, pending = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        if lines:
            for i, line in enumerate(lines):
                if len(line) > limit:
                    raise EngineOverflow(f"a line over {limit} bytes")
                if line.endswith(b"\r"):
                    lines[i] = line[:-1]
            yield lines
        if len(pending) > limit:
            raise EngineOverflow(f"a line over {limit} bytes")
    if pending:
        yield [pending.removesuffix(b"\r")]


async def bounded_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; raises EngineOverflow."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise EngineOverflow(f"a body of {declared} bytes (over {limit})")
    parts, size = [], 0
    async for chunk in response.content.iter_any():
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


# Upstream mode has no tokenizer, so what a request may cost its key's tpm is bounded from its bytes:
# every token of a byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM) or of a SentencePiece model with byte
# fallback (Llama 2, Mistral) stands for at least one byte of text, so a text's UTF-8 bytes bound its
# tokens. Each message adds its template's markers (ChatML: 5 tokens), SentencePiece a leading space,
# and the prompt a BOS and the assistant's header: TEMPLATE_TOKENS each covers them.
TEMPLATE_TOKENS = 16


def prompt_bound(data: dict, chat: bool) -> int:
    """The most tokens the engine can make of the prompt it is sent (`forwarded`, system prompt included)."""
    if chat:
        return sum(len(m["content"].encode()) + TEMPLATE_TOKENS for m in data["messages"]) + TEMPLATE_TOKENS
    return len(data["prompt"].encode()) + TEMPLATE_TOKENS


def completion_bound(events: int, size: int, max_tokens: int) -> int:
    """sm70's own count of an answer's tokens where the engine gave none: at most `max_tokens`, at most
    its UTF-8 bytes (as above), and at least one per text event it sent."""
    return max(events, min(max_tokens, size))


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
        self.slot: tuple[SlotBook, int] | None = None   # llama-server's slot, when sm70 assigns them
        up.outstanding += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.up.outstanding -= 1
            if self.slot is not None:
                book, slot = self.slot
                book.release(slot)


class Call:
    """An open streamed answer from one engine: the events still to read, and the slot it holds."""

    def __init__(self, lease: Lease, response: aiohttp.ClientResponse):
        self.lease, self.up, self.response = lease, lease.up, response
        self.lines = bounded_lines(response, MAX_LINE)
        self.first: bytes | None = None
        self.prompt_bound = 0               # the prompt's most tokens (`prompt_bound`), for the tpm charge
        self.closed = False
        self._read: deque[bytes] = deque()  # `data:` payloads read and not yet taken

    async def next_data(self) -> bytes | None:
        """The next `data:` payload, or None at the end of the body."""
        while not self._read:
            batch = await anext(self.lines, None)
            if batch is None:
                return None
            self._read.extend(line[5:].strip() for line in batch if line.startswith(b"data:"))
        return self._read.popleft()

    def next_read(self) -> bytes | None:
        """The next payload if it has already arrived, without waiting: events that came in one read
        leave in one write."""
        return self._read.popleft() if self._read else None

    def cancel(self) -> None:
        """Give the engine's slot back and its connection up (an answer cut short: the engine stops it)."""
        if not self.closed:
            self.closed = True
            self.lease.release()
            self.response.release()   # a body not read to its end: its connection is closed, not reused

    async def close(self) -> None:
        self.cancel()


@dataclass
class ProxyService:
    engine: Pool
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    disclaimer: str = DEFAULT_DISCLAIMER
    default_max_tokens: int = 512
    keep_text: bool = False
    slots: SlotBook | None = None   # sm70's own llama-server: each key's requests on slots it used (engines/slots.py)

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
        data = forwarded(req)
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

    async def _send(self, up: Upstream, path: str, data: dict) -> aiohttp.ClientResponse:
        """The engine's response, headers read; raises Retry or the engine's own 4xx."""
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        # A stream's connection is not kept: llama.cpp's server closes it a moment after the stream ends,
        # and a request sent on it in that moment would fail.
        headers = {**self.engine.headers, "Content-Type": JSON}
        if data.get("stream"):
            headers["Connection"] = "close"
        for again in (True, False):
            try:
                response = await self.engine.client.post(up.url + path, data=body, allow_redirects=False,
                                                         headers=headers)
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                if again and not isinstance(e, aiohttp.ClientConnectorError):
                    # most likely a kept-alive connection the engine had just closed: it never read the request
                    continue
                self.engine.fail(up, type(e).__name__, unreachable=isinstance(e, aiohttp.ClientConnectorError))
                raise Retry(502, f"{up.name}: {type(e).__name__}") from None
            except TRANSPORT as e:
                self.engine.fail(up, type(e).__name__)
                raise Retry(502, f"{up.name}: {type(e).__name__}") from None
        status = response.status
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
                if self.slots is not None:
                    slot, reuse = await self.slots.acquire(record.user or "")
                    lease.slot = (self.slots, slot)
                    data = {**data, "id_slot": slot, "cache_prompt": reuse}
                response = await self._send(up, path, data)
                result = await opener(lease, response)
            except Retry as e:
                status, why = e.status, str(e)
                if response is not None:
                    response.release()
                lease.release()
                continue
            except BaseException:
                if response is not None:
                    response.release()
                lease.release()
                raise
            self.engine.succeed(up)
            record.upstream = up.name
            return result
        record.outcome = "upstream_unavailable"
        raise HTTPError(status, f"no upstream engine could answer ({why}); retry later", "server_error",
                        headers={"Retry-After": "2"})

    async def _hold_tokens(self, req: Request, data: dict, chat: bool, record: AuditRecord) -> int:
        """Reserve the request's most tokens against its key's tpm (when it has one) before any engine
        sees it; the gate settles to what it really cost. Returns the prompt's bound."""
        bound = prompt_bound(data, chat)
        if record.reserve is not None:
            await record.reserve(bound + (req.token_limit() or self.default_max_tokens))
        return bound

    async def complete(self, req: Request, record: AuditRecord) -> dict:
        data, model, chat = self.payload(req, record)
        bound = await self._hold_tokens(req, data, chat, record)

        async def opener(lease: Lease, response: aiohttp.ClientResponse) -> dict:
            up = lease.up
            try:
                answer = json.loads(await bounded_body(response, MAX_BODY))
                choice = answer["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
                if not isinstance(text, str) and text is not None:
                    raise TypeError("the answer's text is not a string")
            except (*TRANSPORT, ValueError, KeyError, IndexError, TypeError) as e:
                self.engine.fail(up, f"a broken answer ({type(e).__name__})")
                raise Retry(502, f"{up.name}: a broken answer ({type(e).__name__})") from None
            response.release()
            lease.release()
            counts = valid_usage(answer.get("usage"))
            answer.pop("usage", None)
            if counts is not None:
                record.prompt_tokens, record.completion_tokens = counts
                record.tokens_charged = sum(counts)
                answer["usage"] = usage(*counts)
            else:
                record.tokens_charged = bound + completion_bound(bool(text), len((text or "").encode()),
                                                                 req.token_limit() or self.default_max_tokens)
            record.outcome = "ok"
            if self.keep_text:
                record.completion = [text or ""]
            answer["disclaimer"] = self.disclaimer
            return answer

        return await self._attempt("/chat/completions" if chat else "/completions", data, model, record, opener)

    async def start(self, req: Request, record: AuditRecord) -> tuple[Call, str, bool]:
        data, model, chat = self.payload(req, record)
        bound = await self._hold_tokens(req, data, chat, record)

        async def opener(lease: Lease, response: aiohttp.ClientResponse) -> Call:
            up, call = lease.up, Call(lease, response)
            try:
                first = await call.next_data()
            except (*TRANSPORT, ValueError) as e:
                self.engine.fail(up, type(e).__name__)
                raise Retry(502, f"{up.name}: {type(e).__name__}") from None
            if first is None or first == b"[DONE]" or b'"error"' in first[:20]:
                self.engine.fail(up, "the stream ended before its first event")
                raise Retry(502, f"{up.name}: no first event")
            call.first, call.prompt_bound = first, bound
            record.tokens_charged = bound   # the engine has read the prompt, whatever follows
            return call

        call = await self._attempt("/chat/completions" if chat else "/completions", data, model, record, opener)
        record.cancel = call.cancel   # the gate frees the engine's slot if the client leaves
        return call, model, chat

    async def sse(self, req: Request, call: Call, model: str, chat: bool,
                  record: AuditRecord) -> AsyncIterator[bytes]:
        """The engine's events on to the client. Each is parsed (the text, finish_reason and usage must
        be seen) but re-encoded only when it changes: the first (chat) or last (completions) gets the
        disclaimer, a usage chunk gets the checked counts. The rest leave as the engine's own bytes,
        once the parse showed them to be one JSON object each on one line; events that arrived in one
        read leave in one write."""
        parts: list[str] = []
        if self.keep_text:
            record.completion = parts    # what was sent so far, if the client cuts the stream
        deltas, size, first, finished, tail, counts = 0, 0, True, False, b"", None
        send_usage = req.include_usage()
        out: list[bytes] = []
        try:
            data = call.first
            while data is not None and data != b"[DONE]":
                if b"\r" in data:   # a bare CR ends a line for the client's SSE parser, not for ours
                    raise ValueError("a CR inside an event")
                event = json.loads(data.decode())
                if type(event) is not dict or "error" in event:
                    raise ValueError("an error event")
                changed, found = False, None
                if event.get("usage") is not None:
                    found, changed = valid_usage(event.pop("usage")), True
                    if found is not None:
                        counts = found
                        record.prompt_tokens, record.completion_tokens = counts
                choices = event.get("choices") or []
                if choices:
                    choice = choices[0]
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if text:
                        if type(text) is not str:
                            raise TypeError("the text of an event is not a string")
                        parts.append(text)
                        deltas += 1
                        size += len(text.encode())
                        if counts is None:
                            record.completion_tokens = max(record.completion_tokens, deltas)
                    finish = choice.get("finish_reason")
                    if first or (finish and not chat):
                        event["disclaimer"] = self.disclaimer
                        changed = True
                    final = req.final_fields() if finish else None
                    if final:
                        event.update(final)   # rag='s citations (api/grounding.py)
                        changed = True
                    first = False
                    finished = finished or bool(finish)
                    out.append(_sse(event) if changed else b"data: " + data + b"\n\n")
                elif found is not None and send_usage:
                    out.append(_sse({**event, "usage": usage(*found)}))
                data = call.next_read()
                if data is None:
                    if out:
                        yield b"".join(out)
                        out.clear()
                    data = await call.next_data()
            if not finished:  # a clinician must not take a cut answer for a whole one
                raise ValueError("the stream ended without [DONE]" if data is None else "[DONE] before a finish_reason")
            record.outcome = "ok"
        except (*TRANSPORT, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            record.outcome = "upstream_error"
            self.engine.fail(call.up, f"broke mid-stream ({type(e).__name__})")
            # one body with `[DONE]`: the gate writes the closing line before the client can read either
            tail = _sse(error_body(BROKEN, "server_error", code="upstream_error"))
        finally:
            # what the key's tpm is charged: the engine's count (never fewer answer tokens than it sent
            # text events), else sm70's own
            record.tokens_charged = (counts[0] + max(counts[1], deltas) if counts is not None else call.prompt_bound
                                     + completion_bound(deltas, size, req.token_limit() or self.default_max_tokens))
            await call.close()
        yield b"".join(out) + tail + b"data: [DONE]\n\n"


async def _read_quietly(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await bounded_body(response, MAX_BODY)
    except (*TRANSPORT, EngineOverflow):
        return b""
    finally:
        response.release()


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


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"
