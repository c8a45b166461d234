"""`sm70 serve` on a real uvicorn loopback server: OpenAI clients, auth, bad input, audit, batching."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sm70.cli import main

from .conftest import start_server

openai = pytest.importorskip("openai")
CHAT = [{"role": "user", "content": "What is the first-line treatment for anaphylaxis?"}]


def client(server, key=None):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or server.key, max_retries=0)


def post(server, path, body, key="default", **kw):
    headers = {"Authorization": f"Bearer {server.key if key == 'default' else key}"} if key else {}
    if isinstance(body, (dict, list)):
        return httpx.post(server.url + path, json=body, headers=headers, timeout=60, **kw)
    return httpx.post(server.url + path, content=body, headers={**headers, "content-type": "application/json"},
                      timeout=60, **kw)


def audit_lines(server):
    return [json.loads(x) for x in server.audit_log.read_text().splitlines()]


def test_openai_client_chat_and_completions(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["model"]
    r = c.chat.completions.create(model="model", messages=CHAT, max_tokens=8, temperature=0, seed=1,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    assert "not a certified medical device" in r.model_extra["disclaimer"]
    chunks = list(c.chat.completions.create(model="model", messages=CHAT, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8 and chunks[0].model_extra["disclaimer"]

    p = c.completions.create(model="model", prompt="The patient", max_tokens=6, temperature=0,
                             extra_body={"ignore_eos": True})
    s = "".join(ch.choices[0].text for ch in c.completions.create(
        model="model", prompt="The patient", max_tokens=6, temperature=0, stream=True,
        extra_body={"ignore_eos": True}))
    assert p.choices[0].text == s and p.usage.completion_tokens == 6


def test_default_system_prompt_frames_decision_support(server):
    n = len(audit_lines(server))
    client(server).chat.completions.create(model="model", messages=CHAT, max_tokens=2)
    entry = audit_lines(server)[n]
    assert "decision-support assistant for licensed clinicians" in entry["prompt"]


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("GET", "/ready"),
                                          ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")])
def test_auth_on_every_endpoint(server, keys, method, path):
    body = {"messages": CHAT, "max_tokens": 2} if "chat" in path else {"prompt": "Hi", "max_tokens": 2}
    for key in (None, "sm70-000000000000-wrong", keys["bob"], keys["alice"][:-2]):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.request(method, server.url + path, json=body if method == "POST" else None, headers=headers)
        assert r.status_code == 401, (key, r.text)
        assert "API key" in r.json()["error"]["message"] and r.headers["www-authenticate"] == "Bearer"
    r = httpx.request(method, server.url + path, json=body if method == "POST" else None,
                      headers={"Authorization": f"Bearer {keys['alice']}"}, timeout=60)
    assert r.status_code == 200, r.text


def test_health_and_page_need_no_key(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers
    assert "access-control-allow-origin" not in httpx.options(server.url + "/v1/models",
                                                             headers={"Origin": "http://evil.example"}).headers


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/chat/completions", '{"messages": [', 400, "not valid JSON"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {"messages": "hello"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": CHAT, "temperature": 9}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "doctor", "content": "x"}]}, 400, "messages.0.role"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "exactly one prompt"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ("/v1/completions", [1, 2], 400, "body"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": CHAT}, 404, "'gpt-4' is not served"),
    ("/v1/completions", {"prompt": "word " * 3000}, 400, "context limit is 1024 tokens"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 5000}, 400, "context limit is 1024"),
    ("/v1/nothing", {}, 404, "Not Found"),
])
def test_bad_input_gets_a_clear_status(server, path, body, status, message):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and "Traceback" not in r.text
    assert httpx.get(server.url + "/health").status_code == 200


def test_oversized_body_is_refused(server):
    r = post(server, "/v1/completions", b'{"prompt": "' + b"x" * (5 << 20) + b'"}')
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]


def test_audit_line_per_request_chained_and_verifiable(server, tmp_path, capsys):
    before = len(audit_lines(server))
    c = client(server)
    c.chat.completions.create(model="model", messages=CHAT, max_tokens=3)
    list(c.completions.create(model="model", prompt="Call 555-123-4567", max_tokens=3, stream=True))
    post(server, "/v1/chat/completions", "{bad")
    httpx.get(server.url + "/v1/models")                     # 401, still audited
    httpx.get(server.url + "/health")                        # liveness: not audited
    new = audit_lines(server)[before:]
    assert [(e["endpoint"], e["status"], e["outcome"]) for e in new] == [
        ("POST /v1/chat/completions", 200, "ok"),
        ("POST /v1/completions", 200, "streaming"), ("POST /v1/completions", 200, "ok"),   # opened, closed
        ("POST /v1/chat/completions", 400, "rejected"), ("GET /v1/models", 401, "rejected")]
    opened, closed = new[1], new[2]
    assert opened["request"] == closed["request"] != new[0]["request"]
    assert opened["user"] == "alice" and opened["model_fp"] and opened["prompt"] == "Call [PHONE]"
    assert closed["completion_tokens"] == 3 and closed["latency_ms"] > 0 and "completion" in closed
    assert new[4]["user"] is None
    assert server.key not in server.audit_log.read_text()
    assert main(["audit", "verify", str(server.audit_log)]) == 0
    lines = server.audit_log.read_text().splitlines()
    at = before + 1                                          # the stream's opening line
    copy = tmp_path / "audit.log"
    (tmp_path / "audit.key").write_bytes((server.audit_log.parent / "audit.key").read_bytes())
    (tmp_path / "audit.key").chmod(0o600)
    copy.write_text("\n".join(lines[:at] + [lines[at].replace('"alice"', '"mallory"')] + lines[at + 1:]) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", str(copy)]) == 1
    assert f"audit.log:{at + 1}: mac" in capsys.readouterr().out
    copy.write_text("\n".join(lines[:at] + lines[at + 1:]) + "\n")
    assert main(["audit", "verify", str(copy)]) == 1
    assert f"audit.log:{at + 1}: prev" in capsys.readouterr().out


def test_audit_has_no_text_unless_turned_on(tiny_model, tmp_path):
    live = start_server(tiny_model, tmp_path)
    try:
        r = httpx.post(live.url + "/v1/completions", json={"prompt": "Mr. Smith, MRN 12345", "max_tokens": 2},
                       timeout=60)
        assert r.status_code == 200
        text = live.audit_log.read_text()
        assert "Smith" not in text and '"prompt"' not in text and json.loads(text)["user"] == "local"
    finally:
        live.stop()


def test_concurrent_requests_are_batched(server):
    def one():
        client(server).completions.create(model="model", prompt="Sepsis is", max_tokens=24, temperature=0,
                                          extra_body={"ignore_eos": True})

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = httpx.get(server.url + "/ready", headers={"Authorization": f"Bearer {server.key}"}).json()["stats"]
    assert stats["max_batch_seen"] > 1, stats
    assert sum(int(k) * v for k, v in stats["batch_sizes"].items() if int(k) > 1) > 0


def test_client_disconnect_frees_its_slot(server):
    headers = {"Authorization": f"Bearer {server.key}"}
    before = httpx.get(server.url + "/ready", headers=headers).json()["stats"]["cancelled"]
    with httpx.stream("POST", server.url + "/v1/completions", headers=headers, timeout=60,
                      json={"prompt": "Hi", "max_tokens": 900, "ignore_eos": True, "stream": True}) as r:
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received > 3:
                break
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = httpx.get(server.url + "/ready", headers=headers).json()["stats"]
        if stats["running"] == 0 and stats["cancelled"] > before:
            break
        time.sleep(0.05)
    assert stats["running"] == 0 and stats["cancelled"] > before, stats
    entry = [e for e in audit_lines(server) if e["endpoint"] == "POST /v1/completions"][-1]
    assert entry["outcome"] == "client_disconnected"
    # finding: a cut stream was audited with completion_tokens 0 although tokens were delivered
    assert entry["completion_tokens"] >= received, entry


def test_full_queue_answers_429_with_retry_after(tiny_model, tmp_path):
    live = start_server(tiny_model, tmp_path, max_batch=1, max_queue=1)
    body = {"prompt": "Hi", "max_tokens": 200, "ignore_eos": True}
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(live.url + "/v1/completions", json=body, timeout=120))) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert 200 in codes and 429 in codes, codes
        busy = next(r for r in results if r.status_code == 429)
        assert busy.headers["retry-after"] == "2" and "max_queue=1" in busy.json()["error"]["message"]
    finally:
        live.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "2001:db8::1"])
def test_non_loopback_bind_without_keys_is_refused(tiny_model, tmp_path, capsys, host):
    assert main(["serve", f"model={tiny_model}", f"host={host}", f"audit_log={tmp_path / 'a.log'}"]) == 2
    assert "keys: no keys file" in capsys.readouterr().err
    assert main(["serve", f"model={tiny_model}", f"host={host}", "auth=none", f"audit_log={tmp_path / 'a.log'}"]) == 2
    assert "refusing auth=none" in capsys.readouterr().err


def test_loopback_without_keys_needs_auth_none(tiny_model, tmp_path, capsys):
    """Finding: without keys= loopback was silently open to every local user and rebinding page."""
    assert main(["serve", f"model={tiny_model}", f"audit_log={tmp_path / 'a.log'}"]) == 2
    err = capsys.readouterr().err
    assert "keys: no keys file" in err and "auth=none" in err and "Traceback" not in err


def test_only_revoked_keys_is_refused(tiny_model, tmp_path, capsys):
    from .conftest import make_key

    path = tmp_path / "keys.json"
    make_key(path, "x")
    main(["keys", "revoke", "x", f"keys={path}"])
    for host in ("127.0.0.1", "0.0.0.0"):
        assert main(["serve", f"model={tiny_model}", f"host={host}", f"keys={path}"]) == 2
        assert "no active key" in capsys.readouterr().err


def test_chat_cli_against_the_server(server):
    r = subprocess.run([sys.executable, "-m", "sm70.cli", "chat", f"url={server.url}", "max_tokens=4",
                        "temperature=0"], input="Hello\n/reset\nAgain\n", capture_output=True, text=True,
                       timeout=120, env={"SM70_API_KEY": server.key, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and "not a certified medical device" in r.stderr
    bad = subprocess.run([sys.executable, "-m", "sm70.cli", "chat", f"url={server.url}", "key=wrong"],
                         input="Hello\n", capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "401" in bad.stderr and "Traceback" not in bad.stderr
