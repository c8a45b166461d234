"""An audit log that cannot grow: no answer leaves without its line (a `sm70 serve` process with a
file-size limit, as the review ran it), /ready and /health say so, and serving resumes once the
log can be written again; SIGHUP reopens the log instead of killing the server."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import httpx

from sm70.cli import main

from .test_kill import free_port, wait_healthy

LIMIT = 6000   # bytes: room for a handful of lines


def test_audit_that_cannot_grow_fails_closed(tiny_model, tmp_path, capsys):
    """Finding: with the audit file unable to grow, a stream still delivered every token, a
    non-stream request got 200 with an empty body, /health stayed ok and no line was written."""
    port, log = free_port(), tmp_path / "audit.log"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "sm70.cli", "serve", f"model={tiny_model}", f"port={port}",
                             "auth=none", f"audit_log={log}", "max_context=1024", "threads=1", "log_level=warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit, text=True)
    url = f"http://127.0.0.1:{port}"
    body = {"prompt": "The patient", "max_tokens": 4, "ignore_eos": True}
    try:
        wait_healthy(proc, url)
        answered, refused = 0, []
        for i in range(60):
            stream = i % 2 == 1
            with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": stream}, timeout=60) as r:
                raw = r.read().decode()
            if r.status_code == 200 and stream:
                events = [x[6:] for x in raw.split("\n") if x.startswith("data: ")]
                if events[-1] == "[DONE]":
                    answered += 2           # opening and closing line
                else:                       # the opening line made it, the closing one did not
                    assert "audit log cannot be written" in events[-1]
                    answered += 1
                    refused.append("stream-end")
            elif r.status_code == 200:
                assert json.loads(raw)["choices"][0]["text"], raw     # never 200 with an empty body
                answered += 1
            else:
                assert r.status_code == 503 and "audit log cannot be written" in raw, raw
                assert "choices" not in raw and "data:" not in raw    # no token before the line
                refused.append(r.status_code)
            if len(refused) >= 3:
                break
        assert refused, "the audit log never filled up"
        ready = httpx.get(url + "/ready", timeout=10)
        assert ready.status_code == 503 and f"audit log {log}" in " ".join(ready.json()["problems"]), ready.text
        assert httpx.get(url + "/health", timeout=10).status_code == 503

        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        os.kill(proc.pid, signal.SIGHUP)          # logrotate's postrotate signal must not kill the server
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200 and httpx.get(url + "/ready", timeout=10).status_code == 200
        answered += 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    err = proc.stderr.read()
    assert err.count("requests are refused with 503") == 1, err      # one clear error, not one per request
    assert "Traceback" not in err and "writable again" in err
    assert len(log.read_text().splitlines()) == answered            # every answer has its line, nothing else
    assert main(["audit", "verify", str(log)]) == 0                  # short writes were cut back
    capsys.readouterr()
