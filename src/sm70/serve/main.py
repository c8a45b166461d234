"""`sm70 serve model=DIR [adapter=DIR] [quant=nf4] keys=FILE audit_log=FILE host=127.0.0.1 port=8000`.

Private by default: it binds the loopback address, and refuses any other address unless a keys
file with at least one active key is configured. The hub is switched off in this process, so
serving never reaches the network on its own.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.serve.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT


class ServeConfig(Config):
    model: Path
    adapter: Path | None = None
    quant: Literal["none", "nf4"] = "none"
    dtype: str = "auto"
    engine: Literal["transformers", "vllm"] = "transformers"
    served_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    keys: Path | None = None
    audit_log: Path | None = Path("audit.log")
    audit_content: bool = False
    phi_patterns: list[str] = Field(default_factory=list, description="extra regexes the scrubber redacts")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    disclaimer: str = DEFAULT_DISCLAIMER
    max_batch: int = Field(8, ge=1)
    max_queue: int = Field(64, ge=1)
    max_context: int | None = Field(None, ge=16)
    default_max_tokens: int = Field(512, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")
    log_level: str = "info"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: ServeConfig, keys) -> None:
    if is_loopback(cfg.host):
        return
    if cfg.keys is None:
        raise Sm70Error(f"host: refusing to bind {cfg.host!r} without API keys; create one with "
                        f"`sm70 keys add NAME keys=keys.json` and pass keys=keys.json (or keep host=127.0.0.1)")
    if keys.active == 0:
        raise Sm70Error(f"keys: {cfg.keys} has no active key, so host={cfg.host!r} would be open to anyone")


def build(cfg: ServeConfig):
    """The ASGI app and the engine behind it (the engine must be closed by the caller)."""
    from sm70.model.load import ensure_offline, fingerprint
    from sm70.serve.app import build_app
    from sm70.serve.audit import AuditLog
    from sm70.serve.auth import KeyStore
    from sm70.serve.engines import EngineSpec, open_engine
    from sm70.serve.phi import Scrubber
    from sm70.serve.serving import Service

    ensure_offline()
    if cfg.keys is not None and not cfg.keys.is_file():
        raise Sm70Error(f"keys: {cfg.keys} not found; create it with `sm70 keys add NAME keys={cfg.keys}`")
    keys = KeyStore(cfg.keys)
    check_bind(cfg, keys)
    try:
        scrub = Scrubber(cfg.phi_patterns) if cfg.audit_content else None
    except Exception as e:
        raise Sm70Error(f"phi_patterns: not a valid regular expression: {e}") from None
    audit = AuditLog(cfg.audit_log) if cfg.audit_log is not None else None
    spec = EngineSpec(model=cfg.model, adapter=cfg.adapter, quant=cfg.quant, dtype=cfg.dtype,
                      served_name=cfg.served_name, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                      max_context=cfg.max_context, tensor_parallel_size=cfg.tensor_parallel_size,
                      gpu_memory_utilization=cfg.gpu_memory_utilization, threads=cfg.threads)
    engine = open_engine(cfg.engine, spec)
    service = Service(engine, system_prompt=cfg.system_prompt, disclaimer=cfg.disclaimer,
                      default_max_tokens=cfg.default_max_tokens, scrub=scrub)
    prints = {"model_fp": fingerprint(cfg.model), "adapter_fp": fingerprint(cfg.adapter)}
    return build_app(service, keys, audit, prints), engine


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(cfg.to_yaml(), end="")
    app, engine = build(cfg)
    try:
        # access_log off: request lines are in the audit log, with users instead of addresses
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False)
    finally:
        engine.close()
    return 0
