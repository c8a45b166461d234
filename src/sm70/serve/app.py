"""The router: OpenAI endpoints, /health, /ready and the clinicians' page, plus the two cross-cutting
pieces every request goes through: bearer-key auth and the audit middleware.

No CORS middleware on purpose: the page is served from this origin, and no other origin's script
should be able to read answers with a clinician's browser credentials.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from datetime import datetime, timezone
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sm70.serve.protocol import ChatRequest, CompletionRequest, error_body
from sm70.serve.serving import HTTPError, Service

log = logging.getLogger("sm70.serve")
MAX_BODY = 4 << 20
UNAUDITED = ("/health", "/", "/static/")
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}


def build_app(service: Service, keys, audit, fingerprints: dict) -> FastAPI:
    app = FastAPI(title="sm70", docs_url=None, redoc_url=None, openapi_url=None)

    def user(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        record = request.state.audit if hasattr(request.state, "audit") else {}
        if keys.path is None:
            record["user"] = "local"
            return "local"
        name = keys.user(token)
        if name is None:
            raise HTTPError(401, "missing or invalid API key: send `Authorization: Bearer <key>` "
                                 "(create one with `sm70 keys add NAME`)", "authentication_error",
                            headers={"WWW-Authenticate": "Bearer"})
        record["user"] = name
        return name

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request, _: str = Depends(user)):
        return {"ready": True, "models": service.engine.model_ids, "max_context": service.engine.max_context,
                "stats": service.engine.snapshot()}

    @app.get("/v1/models")
    async def models(_: str = Depends(user)):
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sm70"}
                                           for m in service.engine.model_ids]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request, _: str = Depends(user)):
        return await _answer(body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request, _: str = Depends(user)):
        return await _answer(body, request)

    async def _answer(body, request: Request):
        record = request.state.audit
        if body.stream:
            return StreamingResponse(service.stream(body, record), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        return await service.complete(body, record)

    @app.get("/")
    async def page():
        return _static("index.html")

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in STATIC:
            raise HTTPError(404, f"no static file {name!r}", "not_found_error")
        return _static(name)

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, e: HTTPError):
        return JSONResponse(error_body(e.message, e.type, e.param), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, e: RequestValidationError):
        message, param = describe_invalid(e)
        return JSONResponse(error_body(message, "invalid_request_error", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def on_starlette(request: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error"), e.status_code)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception):
        return JSONResponse(error_body("internal error; the server log has the details", "server_error"), 500)

    return AuditMiddleware(app, audit, fingerprints)


def describe_invalid(e: RequestValidationError) -> tuple[str, str | None]:
    """The first problem, with the field named the way the client wrote it (`messages.0.content`)."""
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})", None
    if not loc:
        return f"request body: {err.get('msg')}", None
    field = ".".join(loc)
    return f"{field}: {err.get('msg')}", field


def _static(name: str) -> Response:
    data = (resources.files("sm70.serve") / "static" / name).read_bytes()
    headers = {"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                          "frame-ancestors 'none'",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
    return Response(data, media_type=STATIC[name], headers=headers)


SSE_DONE = b"data: [DONE]\n\n"


class AuditMiddleware:
    """Writes one audit line per request before the response's last byte is sent.

    Handlers fill `request.state.audit` (user, model, token counts, scrubbed text); this layer
    adds time, endpoint, status and latency. A stream ends either with its last chunk or with the
    client going away; both are recorded, and the engine slot is released in the second case.
    Exceptions end here too: a JSON 500 for the client, the traceback without message (which may
    quote patient text) for the server log.
    """

    def __init__(self, app, audit, fingerprints: dict):
        self.app, self.audit, self.fingerprints = app, audit, fingerprints

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        length = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY:
            return await _send_json(send, 413, error_body(f"request body over {MAX_BODY} bytes", "invalid_request_error"))
        audited = self.audit is not None and path not in ("/", "/health") and not path.startswith("/static/")
        record = {"user": None, "model": None, "prompt_tokens": 0, "completion_tokens": 0}
        scope.setdefault("state", {})["audit"] = record
        start = time.monotonic()
        state = {"status": 500, "started": False, "written": False}

        async def write(outcome: str):
            if not audited or state["written"]:
                return
            state["written"] = True
            record.pop("cancel", None)
            entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                     "endpoint": f"{scope['method']} {path}", "status": state["status"],
                     "outcome": record.pop("outcome", outcome), **record,
                     "latency_ms": round((time.monotonic() - start) * 1000, 1), **self.fingerprints}
            await asyncio.to_thread(self.audit.write, entry)

        async def audited_send(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            elif message["type"] == "http.response.body" and (
                    not message.get("more_body", False) or message.get("body", b"").endswith(SSE_DONE)):
                # A stream's client may stop reading at `[DONE]`, before the closing empty body is
                # sent, so the line is written before `[DONE]` leaves, not after.
                await write("ok" if state["status"] < 400 else "rejected")
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception as e:
            if type(e).__name__ != "ClientDisconnect":
                log.error("internal error on %s: %s\n%s", path, type(e).__name__,
                          "".join(traceback.format_tb(e.__traceback__)))
            if not state["started"]:
                state["status"] = 500
                await _send_json(audited_send, 500, error_body("internal error; the server log has the details",
                                                               "server_error"))
        finally:
            cancel = record.get("cancel")
            if cancel is not None:
                cancel()
            await write("client_disconnected" if state["started"] else "error")


async def _send_json(send, status: int, body: dict) -> None:
    import json

    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data, "more_body": False})
