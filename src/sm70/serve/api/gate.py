"""The gate: what every request passes before the router, and every response on its way out.

In order: the `Host` header (DNS rebinding), the API key (before a byte of the body is read, so an
unauthenticated client cannot make the server buffer anything), the key's requests in flight and
its rate limits (limits.py), then the body, read up to `max_body` bytes whether it is chunked or not. A refused body is never buffered: uvicorn discards
what still arrives, and the connection guard (connections.py) closes the connection when no new
request follows within the header deadline. (Closing at once would make the kernel reset the
connection and the client could lose the answer it was sent.)

On the way out it adds the security headers, and the audit line is written before the answer's
first byte leaves: a reply is held until its line is synced, a stream opens with a line of its
own (`open_stream`). When the line cannot be written the client gets 503 instead of an answer
nobody recorded. Paths and hosts are cut before they are recorded, so a refused request costs a
bounded line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from datetime import datetime, timezone

from sm70.serve.guard.audit import AuditRecord, AuditUnavailable
from sm70.serve.guard.auth import KeysUnavailable
from sm70.serve.guard.limits import InFlight, LimitsUnavailable, TokensRefused
from sm70.serve.api.protocol import error_body

log = logging.getLogger("sm70.serve")
MAX_BODY = 4 << 20
MAX_RECORDED = 200          # characters of a path or host kept in the audit line
SSE_DONE = b"data: [DONE]\n\n"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),           # answers may quote patient text: no cache keeps them
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]


def is_public(path: str) -> bool:
    """The page, its static files and the liveness probe: no key, no audit line."""
    return path in ("/", "/health") or path.startswith("/static/")


class Gate:
    def __init__(self, app, *, keys, hosts, audit, scrub, fingerprints: dict, open_access: bool,
                 max_body: int = MAX_BODY, limiter=None, in_flight: InFlight | None = None, metrics=None):
        self.app, self.keys, self.hosts, self.audit, self.scrub = app, keys, hosts, audit, scrub
        self.fingerprints, self.open_access, self.max_body = fingerprints, open_access, max_body
        self.limiter, self.in_flight, self.metrics = limiter, in_flight, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ex = Exchange(self, scope, send)
        try:
            body = await self._admit(ex, scope, receive)
            if body is None:
                return
            delivered = False

            async def replay():
                nonlocal delivered
                if delivered:
                    return await receive()   # the router listens here for the client going away
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, ex.send)
        except Exception as e:
            if type(e).__name__ != "ClientDisconnect":
                ex.record.outcome = "error"
                # the type and the frames, not the message: it may quote patient text
                log.error("internal error on %s: %s\n%s", ex.path[:MAX_RECORDED], type(e).__name__,
                          "".join(traceback.format_tb(e.__traceback__)))
            if not ex.started:
                await ex.respond(500, "internal error; the server log has the details", "server_error")
        finally:
            record = ex.record
            if record.cancel is not None:
                record.cancel()
            # the key's slot and tokens first: its client may have read the answer's end and sent the
            # next request while the last line is still being written or synced
            if ex.holding:
                self.in_flight.leave(record.user)
            if self.metrics is not None:
                self.metrics.observe(ex.path, ex.status, time.monotonic() - ex.start, record.prompt_tokens,
                                     record.completion_tokens)
            try:
                if ex.metered is not None:
                    tokens = (record.tokens_charged if record.tokens_charged is not None else
                              record.prompt_tokens + record.completion_tokens)
                    await self.call_limiter(self.limiter.settle, record.user, ex.metered, ex.hold, tokens)
            finally:
                await ex.finish()

    async def call_limiter(self, call, *args):
        """A call to the limiter: on the event loop for the in-memory store, in a thread for a shared one."""
        if self.limiter.local:
            return call(*args)
        return await asyncio.to_thread(call, *args)

    async def _admit(self, ex: "Exchange", scope, receive) -> bytes | None:
        """The request body if the request may go on to the router; None once it was answered."""
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        if sum(name == b"host" for name, _ in scope.get("headers", [])) > 1:
            # which one a proxy in front of us read is unknowable: a DNS-rebinding page can send both
            ex.extra["host"] = host[:MAX_RECORDED]
            await ex.respond(421, "more than one Host header", "invalid_request_error", outcome="wrong_host")
            return None
        if not self.hosts.allows(host):
            ex.extra["host"] = host[:MAX_RECORDED]
            await ex.respond(421, f"this server does not answer for Host {host[:MAX_RECORDED]!r}; if that is "
                                  f"its name, add it to allowed_hosts", "invalid_request_error",
                             outcome="wrong_host")
            return None
        if is_public(ex.path):
            return b""   # GET-only routes that never read a body
        if self.open_access:
            ex.record.user = "local"
        else:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            try:   # a key seen before is told on the event loop; a new one costs scrypt, in a thread
                ex.record.user = self.keys.known(token) or await asyncio.to_thread(self.keys.user, token)
            except KeysUnavailable:
                await ex.respond(503, "the server's keys file cannot be read; the operator has been told",
                                 "server_error")
                return None
            if ex.record.user is None:
                await ex.respond(401, "missing or invalid API key: send `Authorization: Bearer <key>` (create one "
                                      "with `sm70 keys add NAME`)", "authentication_error",
                                 headers=[(b"www-authenticate", b"Bearer")])
                return None
            if ex.path.startswith("/v1/") and not await self._within_limits(ex):
                return None
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await ex.respond(413, f"request body over {self.max_body} bytes")
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                ex.record.outcome = "client_disconnected"
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:   # chunked bodies have no length up front: count as they come
                await ex.respond(413, f"request body over {self.max_body} bytes")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


    async def _within_limits(self, ex: "Exchange") -> bool:
        """Count the request against its key's in-flight and rate limits; False once it was refused."""
        user = ex.record.user
        if self.in_flight is not None:
            limit = self.keys.in_flight(user) or self.in_flight.default
            if not self.in_flight.enter(user, limit):
                await ex.respond(429, f"this key already has {limit} requests in flight, its limit; retry when one "
                                      f"has finished", "rate_limit_error", outcome="in_flight_limit",
                                 headers=[(b"retry-after", b"1")])
                return False
            ex.holding = True
        if self.limiter is None:
            return True
        rpm, tpm = self.keys.limits(user)
        try:
            wait = await self.call_limiter(self.limiter.admit, user, rpm, tpm)
        except LimitsUnavailable:
            await ex.respond(503, "the server's rate-limit store cannot be reached; the operator has been told",
                             "server_error", headers=[(b"retry-after", b"5")])
            return False
        if wait is not None:
            await ex.respond(429, f"this key's rate limit is reached ({rpm or '-'} requests, {tpm or '-'} "
                                  f"tokens per minute); retry after {wait} s", "rate_limit_error",
                             outcome="rate_limited", headers=[(b"retry-after", str(wait).encode())])
            return False
        ex.metered = tpm
        if tpm is not None:
            ex.record.reserve = ex.reserve
        return True


class Exchange:
    """One request and its response as the gate sees them: the audit record and the held reply."""

    def __init__(self, gate: Gate, scope, send):
        self.gate, self.scope, self._send = gate, scope, send
        self.path = scope["path"]
        self.record = AuditRecord()
        self.extra: dict = {}
        self.id = uuid.uuid4().hex[:16]
        self.start = time.monotonic()
        # /ready and /metrics need a key but write no line: monitors poll them, and they must still
        # answer while the audit log is failing, to say so
        self.audited = gate.audit is not None and not is_public(self.path) and self.path not in ("/ready", "/metrics")
        self.metered: int | None = None  # the key's tpm, which this request's tokens count against
        self.hold: str | None = None    # the tokens it reserved against that tpm (`reserve`)
        self.holding = False            # counted in its key's requests in flight
        self.status: int | None = None  # None: no response was sent (the client left first)
        self.started = False            # the response's first byte was handed to the server
        self.streaming = False
        self.finished = False           # the request's last audit line is written (or failed)
        self.unsynced: int | None = None  # a stream's closing line, written and not yet synced (`finish`)
        self._held: dict | None = None
        self._body: list[bytes] = []
        state = scope.setdefault("state", {})
        state["audit"], state["exchange"] = self.record, self

    async def reserve(self, tokens: int) -> None:
        """Hold the request's most tokens against its key's tpm until it ends (`record.reserve`);
        raises TokensRefused, or LimitsUnavailable."""
        if self.hold is not None:
            raise RuntimeError("a request reserves its tokens once")
        try:
            self.hold = await self.gate.call_limiter(self.gate.limiter.reserve, self.record.user, self.metered, tokens)
        except TokensRefused:
            self.record.outcome, self.record.tokens_charged = "rate_limited", 0   # it never reached an engine
            raise

    # -- audit lines -----------------------------------------------------------------------------
    def _entry(self, outcome: str) -> dict:
        method = self.scope.get("method", "")[:16]
        return {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "request": self.id,
                "endpoint": f"{method} {self.path[:MAX_RECORDED]}", "status": self.status, "outcome": outcome,
                **self.extra, **self.record.fields(),
                "latency_ms": round((time.monotonic() - self.start) * 1000, 1), **self.gate.fingerprints}

    async def _line(self, outcome: str, prompt: bool, completion: bool, synced: bool = True) -> None:
        """Write one line (scrubbing off the event loop), and sync it unless `synced` is false (then
        `finish` does); raises AuditUnavailable."""
        if not self.audited:
            return
        entry, scrub, record = self._entry(outcome), self.gate.scrub, self.record
        texts = {}
        if scrub is not None:   # text is written only through the scrubber, and only when content is on
            if prompt and record.prompt is not None:
                texts["prompt"] = record.prompt
            if completion and record.completion is not None:
                texts["completion"] = "".join(record.completion)

        def work():
            entry.update({k: scrub(v) for k, v in texts.items()})
            if synced:
                self.gate.audit.write(entry)
            else:
                self.unsynced = self.gate.audit.append(entry)

        await asyncio.to_thread(work)

    async def open_stream(self) -> None:
        """The stream's opening line, before its first byte; raises AuditUnavailable."""
        self.status = 200
        try:
            await self._line("streaming", prompt=True, completion=False)
        except AuditUnavailable:
            self.status = None
            raise
        self.streaming = True

    async def finish(self) -> None:
        """The request's last line, if the response did not write it (a cut stream, an error); or the
        sync of a stream's closing line."""
        if self.unsynced is not None:
            line, self.unsynced = self.unsynced, None
            try:
                await asyncio.to_thread(self.gate.audit.sync, line)
            except AuditUnavailable:
                pass   # logged by the audit log, and /ready says so; the client has its answer
        if self.finished:
            return
        self.finished = True
        outcome = self.record.outcome or ("client_disconnected" if self.started else "error")
        try:
            await self._line(outcome, prompt=not self.streaming, completion=True)
        except AuditUnavailable:
            pass   # logged by the audit log; the client has gone or already has its error

    # -- the response ------------------------------------------------------------------------------
    async def respond(self, status: int, message: str, type_: str = "invalid_request_error", *,
                      outcome: str | None = None, headers=()) -> None:
        self.record.outcome = outcome or self.record.outcome
        self._body = []
        data = json.dumps(error_body(message, type_)).encode()
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(data)).encode()), *headers]})
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def send(self, message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            headers = list(message.get("headers", [])) + [h for h in SECURITY_HEADERS if h[0] not in names]
            message = {**message, "headers": headers}
            self.status = message["status"]
            if self.streaming:
                self.started = True
                return await self._send(message)
            self._held = message        # a reply leaves only once its line is synced
            return
        if kind != "http.response.body":
            return await self._send(message)
        if self.streaming:
            body = message.get("body", b"")
            if not self.finished and (body.endswith(SSE_DONE) or not message.get("more_body", False)):
                # written before `[DONE]` leaves (a client may stop reading there), synced just after:
                # the stream's opening line already had the answer on record before its first byte
                self.finished = True
                try:
                    await self._line(self.record.outcome or "ok", prompt=False, completion=True, synced=False)
                except AuditUnavailable:
                    error = error_body("the audit log cannot be written, so this answer is not on record; "
                                       "do not rely on it", "server_error")
                    message = {**message, "body": f"data: {json.dumps(error)}\n\n".encode()}
            return await self._send(message)
        self._body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await self._release()

    async def _release(self) -> None:
        start, body = self._held, b"".join(self._body)
        self.finished = True
        try:
            outcome = self.record.outcome or ("ok" if self.status < 400 else "rejected")
            await self._line(outcome, prompt=True, completion=True)
        except AuditUnavailable:
            self.status = 503
            body = json.dumps(error_body("the audit log cannot be written, so no answer is sent; the operator "
                                         "has been told", "server_error")).encode()
            start = {"type": "http.response.start", "status": 503,
                     "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                 (b"retry-after", b"5"), *SECURITY_HEADERS]}
        self.started = True
        await self._send(start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
