"""The gate on real loopback servers, one test per finding of the serving security review: the key
is checked before the body is read, bodies are bounded while they are read, Host names are checked,
refusals are audited with bounded lines, API answers carry security headers, and slow or too many
connections are closed."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import start_server

CHUNK = 64 << 10


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def chunked_post(url: str, path: str, key: str | None, total: int) -> tuple[bytes, int]:
    """POST `total` bytes chunked, reading as we go; (what the server answered, bytes sent before it did)."""
    s = connect(url)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n{auth}Content-Type: application/json\r\n"
              f"Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = f"{CHUNK:x}\r\n".encode() + b'{"prompt": "' + b"x" * (CHUNK - 12) + b"\r\n"
    sent, answer = 0, b""
    try:
        while sent < total:
            if select.select([s], [], [], 0)[0]:
                break
            s.sendall(chunk)
            sent += CHUNK
        s.settimeout(10)
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return answer, sent


def test_unauthenticated_chunked_body_is_refused_before_it_is_read(server):
    """Finding: a 300 MiB chunked POST without a key was read and parsed whole, then got 401."""
    answer, sent = chunked_post(server.url, "/v1/completions", None, 256 << 20)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < 32 << 20, sent     # socket buffers hold a few MiB; the server read none of it


def test_chunked_body_over_the_limit_is_cut_off(server):
    """Finding: the 4 MiB limit checked Content-Length only; a chunked body had no bound."""
    answer, sent = chunked_post(server.url, "/v1/completions", server.key, 256 << 20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 40 << 20, sent


def test_refusals_are_audited_with_bounded_lines(server):
    """Finding: each unauthenticated request to an unknown path wrote a line as long as its path,
    and 413s wrote no line at all."""
    before = server.audit_log.stat().st_size
    n_before = len(server.audit_log.read_text().splitlines())
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i in range(40):
            assert c.get("/" + "a" * 8000 + str(i)).status_code == 401
        r = c.post("/v1/completions", content=b"x" * (5 << 20), headers={"Authorization": f"Bearer {server.key}"})
        assert r.status_code == 413
    lines = [json.loads(x) for x in server.audit_log.read_text().splitlines()[n_before:]]
    assert [e["status"] for e in lines] == [401] * 40 + [413]
    assert all(len(e["endpoint"]) <= 210 for e in lines)
    assert (server.audit_log.stat().st_size - before) / len(lines) < 1000
    assert lines[-1]["user"] == "alice"


@pytest.fixture(scope="module")
def open_server(tiny_model, tmp_path_factory):
    """auth=none on loopback: what the review found open to a rebinding page."""
    live = start_server(tiny_model, tmp_path_factory.mktemp("open"))
    yield live
    live.stop()


@pytest.mark.parametrize("host", ["rebind.attacker.example", "rebind.attacker.example:80", "127.0.0.1.nip.io",
                                  "localhost.attacker.example"])
def test_rebinding_host_is_refused(open_server, server, host):
    """Finding: `Host: rebind.attacker.example` got a full completion, audited as user "local"."""
    for live in (open_server, server):
        headers = {"Host": host, **({"Authorization": f"Bearer {live.key}"} if hasattr(live, "key") else {})}
        r = httpx.post(live.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, headers=headers)
        assert r.status_code == 421 and "allowed_hosts" in r.json()["error"]["message"], r.text
        assert "choices" not in r.text
    entry = json.loads(open_server.audit_log.read_text().splitlines()[-1])
    assert entry["outcome"] == "wrong_host" and entry["status"] == 421


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST."])
def test_own_names_are_answered(open_server, host):
    port = urlsplit(open_server.url).port
    r = httpx.post(open_server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                   headers={"Host": f"{host}:{port}"}, timeout=60)
    assert r.status_code == 200, r.text


def test_allowed_hosts_adds_a_proxy_name():
    from sm70.serve.guard.hosts import HostPolicy

    policy = HostPolicy.for_bind("127.0.0.1", ["sm70.ward.example"])
    assert policy.allows("sm70.ward.example:443") and not policy.allows("evil.example")
    wildcard = HostPolicy.for_bind("0.0.0.0")
    assert wildcard.allows("10.1.2.3:8000") and not wildcard.allows("[2001:db8::1]") and not wildcard.allows("a.b")


def test_api_answers_carry_security_headers(server):
    """Finding: only static files had security headers; completions lacked Cache-Control: no-store."""
    auth = {"Authorization": f"Bearer {server.key}"}
    answers = [httpx.get(server.url + "/v1/models", headers=auth),
               httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, headers=auth,
                          timeout=60),
               httpx.get(server.url + "/v1/models"), httpx.get(server.url + "/nothing", headers=auth),
               httpx.get(server.url + "/health")]
    assert [r.status_code for r in answers] == [200, 200, 401, 404, 200]
    for r in answers:
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in httpx.get(server.url + "/").headers["content-security-policy"]


def test_invalid_json_without_a_key_is_401(server):
    """Finding: invalid JSON without a key answered 400 (the body was parsed before the key check)."""
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 401


def test_no_redirect_is_built_from_the_host_header(server):
    """Finding: `/v1/models/` redirected to a Location built from the Host header."""
    r = httpx.get(server.url + "/v1/models/", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 404 and "location" not in r.headers


def test_a_big_prompt_does_not_stall_other_clients(server):
    """Finding: tokenizing a 4 MB prompt on the event loop stalled /health for 5.4 s."""
    words = " ".join(f"w{i % 997}x{i % 13}" for i in range(100_000))   # 0.7 MB: seconds of tokenizing here
    stalls, done = [], threading.Event()

    def probe():
        while not done.is_set():
            t = time.monotonic()
            httpx.get(server.url + "/health", timeout=30)
            stalls.append(time.monotonic() - t)
            time.sleep(0.02)

    t = threading.Thread(target=probe)
    t.start()
    start = time.monotonic()
    r = httpx.post(server.url + "/v1/completions", json={"prompt": words}, timeout=120,
                   headers={"Authorization": f"Bearer {server.key}"})
    took = time.monotonic() - start
    done.set()
    t.join()
    assert r.status_code == 400 and "context limit" in r.text
    assert max(stalls) < max(0.5, took / 3), (max(stalls), took)


@pytest.fixture(scope="module")
def guarded(tiny_model, tmp_path_factory):
    live = start_server(tiny_model, tmp_path_factory.mktemp("guarded"), max_connections=6, header_timeout_s=1.0)
    yield live
    live.stop()


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_half_sent_requests_are_closed_and_connections_capped(guarded):
    """Finding: 300 half-sent requests stayed open 40 s; there was no connection cap."""
    netloc = urlsplit(guarded.url).netloc
    slow = [connect(guarded.url) for _ in range(6)]
    for s in slow:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {netloc}\r\nContent-Ty".encode())
    extra = connect(guarded.url)
    assert extra.recv(1024).startswith(b"HTTP/1.1 503")          # over the cap: refused at once
    assert all(closed_within(s, 3) for s in slow)                # no headers within 1 s: closed
    # a finished request followed by half of the next one on the same connection is closed too
    s = connect(guarded.url)
    s.sendall(f"GET /health HTTP/1.1\r\nHost: {netloc}\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /health HTTP/1.1\r\nHo")
    assert closed_within(s, 3)
    assert httpx.get(guarded.url + "/health").status_code == 200    # and the server still answers
