"""`sm70 serve model=DIR [adapter=DIR] [quant=nf4] keys=FILE audit_log=FILE host=127.0.0.1 port=8000`,
`sm70 serve model=FILE.gguf ...` (llama.cpp's llama-server as a supervised child, behind the gateway), or
`sm70 serve upstream=URL[,URL...] [upstream_key=FILE] ...` in front of OpenAI-compatible engines.

Private by default: a keys file is required, even on loopback, because "loopback" still means
every local user and process, and any web page that rebinds a name to 127.0.0.1. Serving without
keys takes an explicit `auth=none`, which is refused on any other address and announced loudly at
start. The hub is switched off in this process, so serving never reaches the network on its own.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.serve.guard.hosts import is_loopback
from sm70.serve.api.grounding import MIN_SCORE
from sm70.serve.api.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT

log = logging.getLogger("sm70.serve")


class ServeConfig(Config):
    model: Path | None = None
    upstream: list[str] = Field(default_factory=list, description="OpenAI-compatible engines to proxy "
                                "(comma-separated base URLs, e.g. http://10.0.0.5:8000/v1), instead of model=")
    upstream_key: Path | None = Field(None, description="file holding the engines' API key (default: "
                                      "$SM70_UPSTREAM_KEY); sent to them only")
    upstream_timeout_s: float = Field(300.0, gt=0, description="longest wait for an engine's next bytes")
    health_interval_s: float = Field(2.0, gt=0, description="seconds between engine health checks")
    eject_after: int = Field(3, ge=1, description="upstream: failed answers in a row that take an engine out")
    max_ejected: float = Field(0.5, gt=0, le=1, description="upstream: largest share of engines taken out for "
                                                            "their answers (one that refuses connections is out)")
    eject_for_s: float = Field(10.0, ge=0, description="upstream: seconds an engine taken out for its answers "
                                                       "stays out before its health check may bring it back")
    adapter: Path | None = None
    quant: Literal["none", "nf4"] = "none"
    dtype: str = "auto"
    engine: Literal["transformers", "llama.cpp", "vllm"] = Field(
        "transformers", description="default: llama.cpp (llama-server, a supervised child) for a "
        "model=FILE.gguf, else transformers")
    served_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: Literal["keys", "none"] = Field("keys", description="none: no API keys (loopback only, say so at start)")
    keys: Path | None = None
    allowed_hosts: list[str] = Field(default_factory=list, description="extra Host names to answer (a proxy's)")
    audit_log: Path | None = Path("audit.log")
    audit_key: Path | None = Field(None, description="HMAC key file for the audit chain (default: audit.key "
                                                     "beside the log; $SM70_AUDIT_KEY wins)")
    audit_content: bool = False
    phi_patterns: list[str] = Field(default_factory=list, description="extra regexes the scrubber redacts")
    rag: Path | None = Field(None, description="an `sm70 index` folder: chat answers from its passages, with "
                             "citations (README, \"Grounded answers\")")
    rag_k: int = Field(5, ge=1, description="passages put before each question")
    rag_min_score: float = Field(MIN_SCORE, ge=0, description="best BM25 score under which the answer is \"no "
                                 "source matches\" instead of the model's; measure it with bench/rag_threshold.py")
    rag_retriever: str = Field("auto", description="auto, bm25, dense or rrf")
    rag_snippet_chars: int = Field(1500, ge=100, description="characters of each passage, at most")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    disclaimer: str = DEFAULT_DISCLAIMER
    max_batch: int = Field(8, ge=1)
    max_queue: int = Field(64, ge=1)
    max_context: int | None = Field(None, ge=16)
    default_max_tokens: int = Field(512, ge=1)
    max_connections: int = Field(256, ge=1)
    key_in_flight: int = Field(8, ge=1, description="requests one key may have running or queued at once, unless "
                               "its keys-file in_flight says otherwise")
    limits_storage: str = Field("memory://", description="where the per-key rpm/tpm windows are kept: memory:// "
                                "(this process) or redis://HOST:PORT shared by several gateways")
    header_timeout_s: float = Field(10.0, gt=0)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enforce_eager: bool = Field(False, description="engine=vllm: no graph compilation (a start in seconds rather "
                                "than minutes on a CPU; slower decoding)")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch or llama.cpp (default: the "
                                "library's choice)")
    slots: int = Field(4, ge=1, description="engine=llama.cpp: requests llama-server decodes together, each with "
                       "max_context tokens of key/value cache")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="engine=llama.cpp: key/value cache type")
    prompt_cache: bool = Field(False, description="engine=llama.cpp: reuse cached prompt prefixes across requests "
                               "(faster; lets one key time whether another's prompt starts the same way)")
    llama_server: Path | None = Field(None, description="engine=llama.cpp: the llama-server binary (default: the one "
                                      "beside this Python, where `make device` installs it, then PATH)")
    ssl_certfile: Path | None = Field(None, description="TLS certificate chain (PEM); with ssl_keyfile")
    ssl_keyfile: Path | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line")

    @model_validator(mode="before")
    @classmethod
    def _gguf_engine(cls, data):
        # chosen before validation, so the printed and saved config names the engine that runs
        if isinstance(data, dict) and "engine" not in data and str(data.get("model") or "").endswith(".gguf"):
            return {**data, "engine": "llama.cpp"}
        return data

    @field_validator("upstream", mode="before")
    @classmethod
    def _split(cls, v):
        return [u for u in v.split(",") if u.strip()] if isinstance(v, str) else v


def check_access(cfg: ServeConfig, keys) -> None:
    if cfg.auth == "none":
        if cfg.keys is not None:
            raise Sm70Error(f"auth: auth=none and keys={cfg.keys} contradict each other; drop one")
        if not is_loopback(cfg.host):
            raise Sm70Error(f"auth: refusing auth=none on {cfg.host!r}: without keys only a loopback address "
                            f"is allowed; create a key with `sm70 keys add NAME keys=keys.json` and pass keys=keys.json")
        return
    if cfg.keys is None:
        raise Sm70Error("keys: no keys file: create one with `sm70 keys add NAME keys=keys.json` and pass "
                        "keys=keys.json (or auth=none to serve without keys on loopback, open to every local user)")
    if not cfg.keys.is_file():
        raise Sm70Error(f"keys: {cfg.keys} not found; create it with `sm70 keys add NAME keys={cfg.keys}`")
    if keys.active == 0:
        raise Sm70Error(f"keys: {cfg.keys} has no active key, so nobody could use the server; "
                        f"add one with `sm70 keys add NAME keys={cfg.keys}`")


def open_audit(cfg: ServeConfig):
    from sm70.serve.guard.audit import AuditLog, default_key_path
    from sm70.serve.guard.chain import load_key

    if cfg.audit_log is None:
        return None
    key = load_key(cfg.audit_key or default_key_path(cfg.audit_log), create=True)
    return AuditLog(cfg.audit_log, key)


LLAMA_SERVER_SETTINGS = {"slots", "kv_cache_type", "prompt_cache", "llama_server"}


def check_shape(cfg: ServeConfig) -> None:
    if (cfg.model is None) == (not cfg.upstream):
        raise Sm70Error("give exactly one of model=DIR (run the model here) or upstream=URL[,URL...] "
                        "(proxy OpenAI-compatible engines)")
    if (cfg.ssl_certfile is None) != (cfg.ssl_keyfile is None):
        raise Sm70Error("ssl: give both ssl_certfile= and ssl_keyfile=, or neither")
    if cfg.model is not None and cfg.model.suffix == ".gguf" and cfg.engine != "llama.cpp":
        raise Sm70Error(f"engine={cfg.engine} does not read GGUF files; serve {cfg.model.name} with engine=llama.cpp "
                        f"(the default for a .gguf model)")
    if cfg.engine != "vllm" and (cfg.tensor_parallel_size != 1 or cfg.enforce_eager):
        raise Sm70Error(f"tensor_parallel_size= and enforce_eager= are engine=vllm's; engine={cfg.engine} cannot "
                        f"honour them")
    theirs = sorted(cfg.model_fields_set & LLAMA_SERVER_SETTINGS)
    if theirs and (cfg.engine != "llama.cpp" or cfg.model is None):
        raise Sm70Error(f"{'=, '.join(theirs)}= are for a model=FILE.gguf (engine=llama.cpp); "
                        f"{'upstream=' if cfg.model is None else f'engine={cfg.engine}'} cannot honour them")
    for name in ("ssl_certfile", "ssl_keyfile", "upstream_key"):
        path = getattr(cfg, name)
        if path is not None and not path.is_file():
            raise Sm70Error(f"{name}: {path} not found")


def open_grounding(cfg: ServeConfig):
    from sm70.serve.api.grounding import Grounding

    if cfg.rag is None:
        return None
    return Grounding(cfg.rag, k=cfg.rag_k, min_score=cfg.rag_min_score, retriever=cfg.rag_retriever,
                     snippet_chars=cfg.rag_snippet_chars)


def open_upstreams(cfg: ServeConfig):
    import os

    from sm70.serve.gateway.pool import Pool
    from sm70.serve.gateway.proxy import ProxyService

    key = cfg.upstream_key.read_text().strip() if cfg.upstream_key else os.environ.get("SM70_UPSTREAM_KEY")
    pool = Pool(cfg.upstream, key or None, timeout_s=cfg.upstream_timeout_s, health_interval_s=cfg.health_interval_s,
                eject_after=cfg.eject_after, max_ejected=cfg.max_ejected, eject_for_s=cfg.eject_for_s)
    service = ProxyService(pool, system_prompt=cfg.system_prompt, disclaimer=cfg.disclaimer,
                           default_max_tokens=cfg.default_max_tokens, keep_text=cfg.audit_content)
    return service, pool, {"upstreams": ",".join(f"{u.name}={u.address}" for u in pool.upstreams)}


def open_llama_server(cfg: ServeConfig, spec):
    """llama-server on the GGUF, behind the same gateway as any upstream: the child is the engine to close."""
    from sm70.serve.engines.llama_server import LlamaServer
    from sm70.serve.engines.slots import SlotBook
    from sm70.serve.gateway.pool import Pool
    from sm70.serve.gateway.proxy import ProxyService

    ignored = sorted(cfg.model_fields_set & {"max_batch", "max_queue", "dtype"})
    if ignored:   # recipes written for a model directory set them
        log.warning("%s= not used for a GGUF: llama-server decodes slots=%d requests at once and queues the rest",
                    "=, ".join(ignored), cfg.slots)
    child = LlamaServer(spec)
    pool = Pool([child.url], child.key, timeout_s=cfg.upstream_timeout_s, health_interval_s=cfg.health_interval_s,
                uds=str(child.socket))
    pool.max_context = child.context    # per slot, for /ready; the child refuses a longer prompt itself (400)
    service = ProxyService(pool, system_prompt=cfg.system_prompt, disclaimer=cfg.disclaimer,
                           default_max_tokens=cfg.default_max_tokens, keep_text=cfg.audit_content,
                           slots=None if cfg.prompt_cache else SlotBook(cfg.slots))
    return service, child


def build(cfg: ServeConfig):
    """The ASGI app and the engine behind it (the engine must be closed by the caller)."""
    from sm70.model.load import ensure_offline, fingerprint
    from sm70.serve.api.app import build_app
    from sm70.serve.guard.auth import KeyStore
    from sm70.serve.engines.registry import EngineSpec, open_engine
    from sm70.serve.guard.hosts import HostPolicy
    from sm70.serve.guard.limits import Limiter
    from sm70.serve.guard.phi import Scrubber
    from sm70.serve.api.serving import Service

    ensure_offline()
    check_shape(cfg)
    keys = KeyStore(cfg.keys if cfg.auth == "keys" else None)
    check_access(cfg, keys)
    grounding = open_grounding(cfg)   # before the model loads: a wrong rag= path fails in a second
    scrub = Scrubber(cfg.phi_patterns) if cfg.audit_content else None
    audit = open_audit(cfg)
    limits = {"limiter": Limiter(cfg.limits_storage), "key_in_flight": cfg.key_in_flight}
    if cfg.auth == "none":
        log.warning("auth=none: NO API KEYS. Every local user and process that can reach %s:%s can use the "
                    "model; requests are audited as user 'local'", cfg.host, cfg.port)
    if cfg.upstream:
        service, engine, prints = open_upstreams(cfg)
        app = build_app(service, keys, audit, prints, hosts=HostPolicy.for_bind(cfg.host, cfg.allowed_hosts),
                        scrub=scrub, open_access=cfg.auth == "none", grounding=grounding, **limits)
        return app, engine
    spec = EngineSpec(model=cfg.model, adapter=cfg.adapter, quant=cfg.quant, dtype=cfg.dtype,
                      served_name=cfg.served_name, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                      max_context=cfg.max_context, tensor_parallel_size=cfg.tensor_parallel_size,
                      gpu_memory_utilization=cfg.gpu_memory_utilization, threads=cfg.threads,
                      enforce_eager=cfg.enforce_eager, slots=cfg.slots, kv_cache_type=cfg.kv_cache_type,
                      prompt_cache=cfg.prompt_cache, llama_server=cfg.llama_server)
    if cfg.engine == "llama.cpp":
        service, engine = open_llama_server(cfg, spec)
    else:
        engine = open_engine(cfg.engine, spec)
        service = Service(engine, system_prompt=cfg.system_prompt, disclaimer=cfg.disclaimer,
                          default_max_tokens=cfg.default_max_tokens, keep_text=cfg.audit_content)
    prints = {"model_fp": fingerprint(cfg.model), "adapter_fp": fingerprint(cfg.adapter)}
    app = build_app(service, keys, audit, prints, hosts=HostPolicy.for_bind(cfg.host, cfg.allowed_hosts),
                    scrub=scrub, open_access=cfg.auth == "none", grounding=grounding, **limits)
    return app, engine


class JsonFormatter(logging.Formatter):
    """One object per line for a log collector: time, level, logger, message (and the frames of an
    exception, never its arguments' values beyond what the message already says)."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime, timezone

        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(cfg: ServeConfig) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if cfg.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=cfg.log_level.upper(), handlers=[handler])


def uvicorn_config(app, cfg: ServeConfig, port: int | None = None):
    import uvicorn

    from sm70.serve.guard.connections import guarded_protocol

    # json: uvicorn's own lines go through the root handler too, instead of its text formatter
    extra = {"log_config": None} if cfg.log_format == "json" else {}
    # access_log off: request lines are in the audit log, with users instead of addresses
    return uvicorn.Config(app, **extra, host=cfg.host, port=cfg.port if port is None else port, log_level=cfg.log_level,
                          access_log=False, ws="none", server_header=False,
                          ssl_certfile=cfg.ssl_certfile, ssl_keyfile=cfg.ssl_keyfile,
                          http=guarded_protocol(cfg.max_connections, cfg.header_timeout_s))


def _stop(signum, frame):
    raise SystemExit(0)


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    setup_logging(cfg)
    print(cfg.to_yaml(), end="")
    # A service manager stops us with SIGTERM. uvicorn raises it again once it has shut down, and the
    # default action would end the process there, before `finally` closes the engine (llama-server's
    # socket and key would stay behind); as an exception it also ends a model load cleanly.
    signal.signal(signal.SIGTERM, _stop)
    app, engine = build(cfg)
    if app.audit is not None:
        def on_hup(signum, frame):   # logrotate's postrotate: the next line goes to a fresh file
            app.audit.reopen_requested = True

        signal.signal(signal.SIGHUP, on_hup)
    try:
        uvicorn.Server(uvicorn_config(app, cfg)).run()
    finally:
        engine.close()
    return 0
