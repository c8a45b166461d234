"""A key's tpm holds under concurrency: each request reserves its most tokens when it starts and
settles to what it cost when it ends (guard/limits.py), here in upstream mode in front of an engine
the test scripts (tests/serve/scripted_engine.py). The security review's case: ten requests at once
against tpm=100 were all admitted and charged 50,500 tokens when they ended."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from sm70.serve.gateway.proxy import TEMPLATE_TOKENS, prompt_bound

from .conftest import start_gateway
from .scripted_engine import MODEL, WORDS, ScriptedEngine

SYSTEM = "Be brief."


def ask(url: str, key: str, script: str, max_tokens: int, stream: bool = False) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": script}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def bound(script: str) -> int:
    """The prompt's tokens as the gateway bounds them: its UTF-8 bytes and the template's allowance."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": script}]
    assert prompt_bound({"messages": messages}, chat=True) == len(SYSTEM) + len(script) + 3 * TEMPLATE_TOKENS
    return prompt_bound({"messages": messages}, chat=True)


def settled(gateway, tpm: int) -> int:
    """The key's window once nothing holds tokens: a request settles just after its client has read its
    end (the gateway's last step), so a test that has the answer may look a moment too early."""
    deadline = time.monotonic() + 10
    while (used := gateway.app.limiter.used("ward", tpm))[1]:
        assert time.monotonic() < deadline, used
        time.sleep(0.02)
    return used[0]


@pytest.fixture
def engine():
    made = ScriptedEngine()
    yield made
    made.stop()


@pytest.fixture
def keys(tmp_path, capsys):
    """A keys file with one key, `ward`, whose tpm is 300."""
    from sm70.cli import main

    path = tmp_path / "keys.json"
    assert main(["keys", "add", "ward", f"keys={path}", "tpm=300"]) == 0
    return path, capsys.readouterr().out.strip()


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_concurrent_requests_cannot_overrun_the_tpm(engine, keys, tmp_path, storage, request):
    """Ten requests at once, each reserving its prompt and max_tokens: only as many as fit are admitted,
    through one gateway or two sharing a Redis store; they settle when they end."""
    path, key = keys
    store = request.getfixturevalue("redis_url")[0] if storage == "redis" else "memory://"
    gateways = [start_gateway(tmp_path / f"g{i}", [engine.url + "/v1"], keys=str(path), key_in_flight=16,
                              limits_storage=store) for i in range(2 if storage == "redis" else 1)]
    reserve = bound("held") + 10
    codes: list[int] = []
    try:
        threads = [threading.Thread(target=lambda i=i: codes.append(
            ask(gateways[i % len(gateways)].url, key, "held", 10, stream=True).status_code)) for i in range(10)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30   # every request is either held at the engine or refused
        while len(engine.seen) + len(codes) < 10:
            assert time.monotonic() < deadline, (len(engine.seen), codes)
            time.sleep(0.05)
        assert len(engine.seen) == 300 // reserve and codes == [429] * (10 - 300 // reserve)
        engine.release()
        for t in threads:
            t.join(timeout=30)
        assert sorted(codes) == [200] * (300 // reserve) + [429] * (10 - 300 // reserve)
        # no usage in these streams: each is charged sm70's own count, its prompt's bound and its 10 tokens
        # (its words' 34 bytes, at most max_tokens), and holds nothing once settled
        assert settled(gateways[0], 300) == (300 // reserve) * (bound("held") + 10)
    finally:
        engine.release()
        for g in gateways:
            g.stop()


def test_a_settled_request_frees_what_it_did_not_use(engine, keys, tmp_path):
    path, key = keys
    gateway = start_gateway(tmp_path, [engine.url + "/v1"], keys=str(path))
    try:
        # reserves its prompt and 200 tokens; the engine counts 7 + 5, and that is what is charged
        assert ask(gateway.url, key, "whole", 200).status_code == 200
        assert settled(gateway, 300) == 12
        # had the first kept its reservation, 2 x (prompt + 200) would not fit in 300
        assert ask(gateway.url, key, "whole", 200).status_code == 200
        assert settled(gateway, 300) == 24
        # usage that never arrives (a stream without it): sm70's own count, the answer's bytes at most
        assert ask(gateway.url, key, "whole", 200, stream=True).status_code == 200
        used = 24 + bound("whole") + len("".join(WORDS).encode())
        assert settled(gateway, 300) == used
        # a request that could never fit is told so, with no Retry-After to wait for
        r = ask(gateway.url, key, "whole", 400)
        assert r.status_code == 429 and "retry-after" not in r.headers, r.text
        assert "more than this key's 300 tokens per minute: lower max_tokens" in r.json()["error"]["message"]
        # one that fits once the window has room again is told when
        r = ask(gateway.url, key, "whole", 300 - used - bound("whole") + 1)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60, r.text
        assert ask(gateway.url, key, "whole", 300 - used - bound("whole")).status_code == 200
    finally:
        gateway.stop()
