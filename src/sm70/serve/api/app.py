"""The router: OpenAI endpoints, /health, /ready and the clinicians' page, behind the `Gate`
(Host check, API key, bounded body, security headers, audit lines; see gate.py).

No CORS middleware on purpose: the page is served from this origin, and no other origin's script
should be able to read answers with a clinician's browser credentials. No slash redirects either:
Starlette builds their `Location` from the client's `Host` header.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sm70.serve.guard.audit import AuditUnavailable
from sm70.serve.api.gate import Gate
from sm70.serve.api.grounding import Grounding
from sm70.serve.guard.hosts import HostPolicy
from sm70.serve.guard.limits import InFlight, Limiter, LimitsUnavailable, TokensRefused
from sm70.serve.api.metrics import CONTENT_TYPE, Metrics
from sm70.serve.api.protocol import API_ERRORS, READ_ERRORS, ChatRequest, CompletionRequest, error_body
from sm70.serve.api.serving import HTTPError, Service

STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}
# An answer is a JSON object, or with "stream": true an event stream (documented in the schema).
ANSWERS = {200: {"content": {"application/json": {}, "text/event-stream": {}}}, **API_ERRORS}


def build_app(service: Service, keys, audit, fingerprints: dict, *, hosts: HostPolicy | None = None,
              scrub=None, open_access: bool = False, limiter: Limiter | None = None, key_in_flight: int = 8,
              grounding: Grounding | None = None) -> Gate:
    # upstream mode's service owns an HTTP client and a health loop, started and stopped with the app
    app = FastAPI(title="sm70", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=getattr(service, "lifespan", None))
    app.router.redirect_slashes = False
    limiter = limiter or Limiter()

    def problems() -> list[str]:
        """Why the server cannot answer now (each also logged once when it began)."""
        return [p for p in (audit.error if audit is not None else None, keys.problem, limiter.problem,
                            getattr(service, "problem", None)) if p]

    @app.get("/health")
    async def health():
        # no detail here: this endpoint is open to anyone who can reach the port
        if problems():
            return JSONResponse({"status": "unavailable"}, 503)
        return {"status": "ok"}

    @app.get("/ready", responses=READ_ERRORS)
    async def ready():
        if problems():
            return JSONResponse({"ready": False, "problems": problems()}, 503)
        return {"ready": True, "models": service.engine.model_ids, "max_context": service.engine.max_context,
                "stats": service.engine.snapshot()}

    metrics = Metrics(lambda: service.engine.snapshot())

    @app.get("/metrics", responses=READ_ERRORS, response_class=PlainTextResponse)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", responses=READ_ERRORS)
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sm70"}
                                           for m in service.engine.model_ids]}

    @app.post("/v1/chat/completions", responses=ANSWERS)
    async def chat_completions(body: ChatRequest, request: Request):
        return await _answer(body, request)

    @app.post("/v1/completions", responses=ANSWERS)
    async def completions(body: CompletionRequest, request: Request):
        return await _answer(body, request)

    async def _answer(body, request: Request):
        exchange, record = request.state.exchange, request.state.audit
        if grounding is not None:
            grounded = await grounding.apply(body, service, record)
            if grounded is None:   # no source in the index matches: the engine is not asked
                answer = grounding.refusal(body, service, record)
                return await _stream(exchange, answer, None) if body.stream else answer
            body = grounded
        if not body.stream:
            return {**await service.complete(body, record), **body.final_fields()}
        handle, model, chat = await service.start(body, record)
        return await _stream(exchange, service.sse(body, handle, model, chat, record), handle.cancel)

    async def _stream(exchange, events, cancel) -> StreamingResponse:
        try:
            await exchange.open_stream()     # on record before the first token leaves
        except AuditUnavailable:
            if cancel is not None:
                cancel()
            raise HTTPError(503, "the audit log cannot be written, so no answer is sent; the operator has been "
                                 "told", "server_error", headers={"Retry-After": "5"}) from None
        return StreamingResponse(events, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return _static("index.html")

    @app.get("/static/{name}", responses={200: {"content": {t: {} for t in STATIC.values()}}, **READ_ERRORS,
                                            404: API_ERRORS[404]})
    async def static(name: str):
        if name not in STATIC:
            raise HTTPError(404, f"no static file {name[:100]!r}", "not_found_error")
        return _static(name)

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, e: HTTPError):
        return JSONResponse(error_body(e.message, e.type, e.param), e.status, headers=e.headers)

    @app.exception_handler(TokensRefused)
    async def on_tokens_refused(request: Request, e: TokensRefused):
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
        return JSONResponse(error_body(e.message, "rate_limit_error", "max_tokens"), 429, headers=headers)

    @app.exception_handler(LimitsUnavailable)
    async def on_limits_unavailable(request: Request, e: LimitsUnavailable):
        return JSONResponse(error_body("the server's rate-limit store cannot be reached; the operator has been told",
                                       "server_error"), 503, headers={"Retry-After": "5"})

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

    return Gate(app, keys=keys, hosts=hosts or HostPolicy.for_bind("127.0.0.1"), audit=audit, scrub=scrub,
                fingerprints=fingerprints, open_access=open_access, limiter=limiter,
                in_flight=InFlight(key_in_flight), metrics=metrics)


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
    data = (resources.files("sm70.serve.api") / "static" / name).read_bytes()
    headers = {"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                          "frame-ancestors 'none'"}
    return Response(data, media_type=STATIC[name], headers=headers)
