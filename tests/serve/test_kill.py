"""A server SIGKILLed under load leaves an audit log of whole, chained lines."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from sm70.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, seconds: float = 60) -> None:
    """Until the `sm70 serve` subprocess answers /health; its stderr tail if it died first."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read()
            raise AssertionError((err.decode() if isinstance(err, bytes) else err)[-2000:])
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


def test_sigkill_under_load_leaves_whole_lines(tiny_model, tmp_path):
    port, log = free_port(), tmp_path / "audit.log"
    proc = subprocess.Popen([sys.executable, "-m", "sm70.cli", "serve", f"model={tiny_model}", f"port={port}",
                             "auth=none", f"audit_log={log}", "max_context=1024", "threads=1", "log_level=warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    try:
        started = time.monotonic()
        wait_healthy(proc, url)

        def load(stream: bool):
            while not stop.is_set():
                try:
                    body = {"prompt": "The patient", "max_tokens": 16 if not stream else 400, "stream": stream,
                            "ignore_eos": True}
                    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
                        for _ in r.iter_bytes():
                            pass
                except httpx.HTTPError:
                    return

        threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(6)]
        for t in threads:
            t.start()
        while not log.exists() or log.read_text().count("\n") < 10:
            assert time.monotonic() < started + 120
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in threads:
        t.join(timeout=30)
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    entries = [json.loads(line) for line in raw.splitlines()]
    assert len(entries) >= 10 and all(e["status"] == 200 for e in entries)
    assert main(["audit", "verify", str(log)]) == 0
