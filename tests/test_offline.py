"""No connection out unless allowed: training, evaluation and serving, each run as `sm70` in its own
process on a machine with a network, open no socket beyond loopback and look up no host name.

Each process (and any it starts) carries an audit hook, installed by a `sitecustomize` on PYTHONPATH,
that records every `socket.connect` to an address that is not loopback and every `socket.getaddrinfo`
of a name other than localhost. The hook watches the attempt, so it needs no network namespace and
catches a connection that would have succeeded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import sm70
from sm70 import offline
from sm70.render import apply_template
from tests.serve.test_kill import wait_healthy

SRC = str(Path(sm70.__file__).resolve().parents[1])
SAMPLES = Path(sm70.__file__).parent / "samples"

WATCH = r'''
import ipaddress, os, socket, sys

_LOG = os.environ["SM70_CONNECT_LOG"]


def _outside(host) -> bool:
    if host is None:
        return False
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("", "localhost", "localhost.localdomain"):
        return False
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True   # a name to resolve: the lookup itself leaves the machine


def _note(what: str) -> None:
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (what + " in " + " ".join(sys.argv)[:200] + "\n").encode())
    os.close(fd)


def _hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and _outside(address[0]):
            _note(f"connect {address!r}")
    elif event == "socket.getaddrinfo" and _outside(args[0]):
        _note(f"getaddrinfo {args[0]!r}")


sys.addaudithook(_hook)
'''


@pytest.fixture
def watched(tmp_path):
    """(env, log): an environment whose Python processes record their outbound attempts in log."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(WATCH)
    log = tmp_path / "connects.log"
    env = {k: v for k, v in os.environ.items() if k not in ("SM70_ALLOW_HUB", *offline.SWITCHES)}
    env.update(SM70_CONNECT_LOG=str(log), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(hook), SRC, os.environ.get("PYTHONPATH", "")]))
    return env, log


def sm70_cli(env, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sm70.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def attempts(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_hook_sees_an_outbound_attempt(watched):
    """The watcher itself: a lookup and a connection outside loopback are recorded, loopback is not."""
    env, log = watched
    code = ("import socket\n"
            "for target in [('127.0.0.1', 9), ('192.0.2.1', 9)]:\n"     # TEST-NET-1: never routed
            "    s = socket.socket(); s.settimeout(0.2)\n"
            "    try: s.connect(target)\n"
            "    except OSError: pass\n"
            "try: socket.getaddrinfo('huggingface.co', 443)\n"
            "except OSError: pass\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    seen = attempts(log)
    assert len(seen) == 2 and "192.0.2.1" in seen[0] and "huggingface.co" in seen[1], seen


def test_train_and_eval_open_no_socket_beyond_loopback(watched, tiny_model, tmp_path):
    env, log = watched
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"f{i}", "source": "medical_meadow", "completion": f" Answer {i}.",
             "prompt": apply_template("medalpaca", "Answer this question truthfully", f"Question {i}?")}
            for i in range(8)]
    for name in ("train", "val"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = sm70_cli(env, "train", f"model={tiny_model}", f"data={data}", f"out={tmp_path / 'run'}", "quant=nf4",
                     "max_steps=2", "micro_batch=2", "max_length=128", "eval_steps=2", "save_steps=2",
                     "logging_steps=1")
    evaluation = sm70_cli(env, "eval", "task=medqa", f"data={SAMPLES / 'medqa' / 'test.jsonl'}", "limit=4",
                          f"model={tiny_model}", "quant=nf4", f"out={tmp_path / 'eval'}")
    assert attempts(log) == []
    for proc in (train, evaluation):
        assert "kernels-community" not in proc.stderr and "publisher trust" not in proc.stderr


def test_serving_opens_no_socket_beyond_loopback(watched, tiny_model, tmp_path):
    env, log = watched
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sm70.cli", "serve", f"model={tiny_model}", "quant=nf4",
                             "auth=none", f"port={port}", f"audit_log={tmp_path / 'audit.log'}", "threads=1",
                             "log_level=warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, seconds=180)
        r = httpx.post(url + "/v1/completions", json={"prompt": "The patient", "max_tokens": 3}, timeout=60)
        assert r.status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert attempts(log) == []
    assert "kernels-community" not in err and "publisher trust" not in err


def test_the_hub_stays_reachable_when_allowed(watched):
    """SM70_ALLOW_HUB=1 leaves the libraries' own settings alone (for `sm70 model fetch hf:...`)."""
    env, _ = watched
    code = ("import os; from sm70 import offline; offline.apply(); "
            "print([os.environ.get(k) for k in offline.SWITCHES])")
    allowed = subprocess.run([sys.executable, "-c", code], env={**env, "SM70_ALLOW_HUB": "1"}, text=True,
                             capture_output=True, check=True).stdout
    default = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                             check=True).stdout
    assert allowed.strip() == "[None, None, None]" and default.strip() == "['1', '1', '1']"
