"""Serving fixtures: keys, and real uvicorn servers on free loopback ports (in a thread)."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import pytest

from sm70.config import load_config
from sm70.serve.guard.auth import KeysConfig, add_key, revoke_key


def make_key(keys: Path, name: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        add_key(load_config(KeysConfig, name=name, keys=str(keys)))
    return out.getvalue().strip()


class LiveServer:
    """`sm70 serve`'s app and engine, served by uvicorn on 127.0.0.1:<free port> in a thread, with the
    same uvicorn configuration (connection guard included) as `sm70 serve`."""

    def __init__(self, app, engine, cfg):
        import uvicorn

        from sm70.serve.main import uvicorn_config

        self.app, self.engine, self.audit_log = app, engine, cfg.audit_log
        self.server = uvicorn.Server(uvicorn_config(app, cfg, port=0))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.close()


def start_server(model: Path, tmp: Path, **overrides) -> LiveServer:
    """A server on loopback; without keys= it runs with auth=none, as a test must ask for that too."""
    from sm70.serve.main import ServeConfig, build

    values = {"model": str(model), "audit_log": str(tmp / "audit.log"), "max_context": 1024, "threads": 1,
              "log_level": "warning", **overrides}
    values.setdefault("auth", "keys" if "keys" in overrides else "none")
    cfg = load_config(ServeConfig, **values)
    app, engine = build(cfg)
    return LiveServer(app, engine, cfg)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """A keys file with alice (active), bob (revoked) and their keys."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    alice = make_key(path, "alice")
    bob = make_key(path, "bob")
    with contextlib.redirect_stdout(io.StringIO()):
        revoke_key(load_config(KeysConfig, name="bob", keys=str(path)))
    return {"file": path, "alice": alice, "bob": bob}


@pytest.fixture(scope="session")
def server(tiny_model, keys, tmp_path_factory):
    """The shared server: the tiny model, keys required, audit log on, content auditing on."""
    live = start_server(tiny_model, tmp_path_factory.mktemp("serve"), keys=str(keys["file"]),
                        audit_content=True)
    live.key = keys["alice"]
    yield live
    live.stop()


def start_gateway(tmp: Path, upstreams: list[str], **overrides) -> LiveServer:
    """`sm70 serve upstream=...` in a thread on loopback, in front of the given engines."""
    from sm70.serve.main import ServeConfig, build

    values = {"upstream": ",".join(upstreams), "audit_log": str(tmp / "gateway-audit.log"),
              "health_interval_s": 0.3, "log_level": "warning", **overrides}
    values.setdefault("auth", "keys" if "keys" in overrides else "none")
    cfg = load_config(ServeConfig, **values)
    app, engine = build(cfg)
    return LiveServer(app, engine, cfg)


class Engine:
    """A real `sm70 serve` of a model in its own process, so a test can SIGKILL it. With `log=FILE` its
    log goes there (a test can read it; a pipe nobody reads would stall a chatty server)."""

    def __init__(self, model: Path, tmp: Path, port: int, *args: str, log: Path | None = None):
        import subprocess
        import sys

        self.spec, self.log = (model, tmp, port, *args), log
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.audit_log = tmp / f"engine-{port}.log"
        self.argv = [sys.executable, "-m", "sm70.cli", "serve", f"model={model}", f"port={port}",
                     f"audit_log={self.audit_log}", "max_context=1024", "threads=1", "log_level=warning", *args]
        if not any(a.startswith("keys=") for a in args):
            self.argv.append("auth=none")
        stderr = open(log, "ab") if log else subprocess.PIPE
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=stderr,
                                     env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        if log:
            stderr.close()

    def wait(self, timeout: float = 90) -> "Engine":
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.errors()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "engine did not start"
            time.sleep(0.2)

    def errors(self) -> str:
        return (self.log.read_text() if self.log else self.proc.stderr.read().decode())[-2000:]

    def restart(self) -> "Engine":
        self.__init__(*self.spec, log=self.log)
        return self.wait()

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: the server closes its engine on the way out."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The llama-server `sm70 serve model=FILE.gguf` finds (`make device` puts it beside the venv's python)."""
    import os

    from sm70.errors import Sm70Error
    from sm70.serve.engines.llama_server import find_binary

    try:
        return find_binary(None)
    except Sm70Error as e:
        if os.environ.get("CI"):   # in CI `make test` builds it first: a missing one must fail, not skip
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def gguf_server(smollm2_gguf, llama_server_binary, keys, tmp_path_factory):
    """The shared `sm70 serve model=FILE.gguf`: SmolLM2 Q8_0 in a supervised llama-server (2 slots, one
    thread), keys required, served as "model", for every test that needs answers from it."""
    tmp = tmp_path_factory.mktemp("gguf-serve")
    engine = Engine(smollm2_gguf / "model-q8_0.gguf", tmp, free_port(), f"keys={keys['file']}", "max_context=2048",
                    "slots=2", "served_name=model", "health_interval_s=0.3", log=tmp / "serve.log").wait(timeout=180)
    engine.key = keys["alice"]
    yield engine
    engine.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A real Redis (Debian's redis-server) on a free loopback port, its files in a temporary folder."""
    import os
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run installs it (apt-get install redis-server)")
        pytest.skip("redis-server is not installed here (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
