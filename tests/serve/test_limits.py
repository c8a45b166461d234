"""Per-key limits and expiry from the keys file, `sm70 keys list`, `/metrics`, and TLS, on real servers."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import time

import httpx
import pytest

from sm70.cli import main
from sm70.errors import Sm70Error
from sm70.serve.guard.limits import Limiter

from .conftest import free_port, start_server

openai = pytest.importorskip("openai")


@pytest.mark.parametrize("rpm, tpm, charges, expect", [
    (2, None, [0, 0], 60),           # two requests used the minute: the next waits for the first to leave
    (None, 100, [60, 50], 60),       # 110 tokens fill the window: the next waits for the oldest to leave
    (None, 100, [60, 30], None),
    (None, None, [10**6], None),     # no limits set: never refused
])
def test_limiter_window(rpm, tpm, charges, expect):
    lim = Limiter()
    for n in charges:
        assert lim.admit("u", rpm, tpm) is None
        if tpm is not None:
            lim.charge("u", tpm, n)
    assert lim.admit("u", rpm, tpm) == expect
    assert lim.admit("other", rpm, tpm) is None   # limits are per key


def test_the_window_moves():
    lim = Limiter(window_s=1)
    assert [lim.admit("u", 2, None) for _ in range(3)] == [None, None, 1]
    time.sleep(1.1)
    assert lim.admit("u", 2, None) is None


def test_an_unknown_or_unreachable_store_stops_the_start():
    with pytest.raises(Sm70Error, match="limits_storage: 'nosuch://x'"):
        Limiter("nosuch://x")
    with pytest.raises(Sm70Error, match="cannot be reached"):
        Limiter(f"redis://127.0.0.1:{free_port()}")


def add(keys, name, *args):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["keys", "add", name, f"keys={keys}", *args]) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def limited(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    keys = tmp / "keys.json"
    tokens = {"fast": add(keys, "fast", "rpm=2"), "thrifty": add(keys, "thrifty", "tpm=10"),
              "old": add(keys, "old", "expires=2020-01-01"), "ops": add(keys, "ops", "expires=2999-12-31"),
              "burst": add(keys, "burst", "rpm=1")}
    live = start_server(tiny_model, tmp, keys=str(keys))
    live.tokens, live.keys_file = tokens, keys
    yield live
    live.stop()


def call(live, who, path="/v1/completions", **body):
    return httpx.post(live.url + path, json={"prompt": "The patient", "max_tokens": 4, **body},
                      headers={"Authorization": f"Bearer {live.tokens[who]}"}, timeout=60)


def test_rpm_tpm_and_expiry(limited):
    assert [call(limited, "fast").status_code for _ in range(2)] == [200, 200]
    r = call(limited, "fast")
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert call(limited, "ops").status_code == 200                  # another key is not held back
    # tpm=10: a request reserves its prompt (tokenized) and its max_tokens, and fits only if both do
    prompt = len(limited.engine.tokenizer("The patient")["input_ids"])
    r = call(limited, "thrifty", max_tokens=11 - prompt)
    assert r.status_code == 429 and "lower max_tokens" in r.json()["error"]["message"], r.text
    assert call(limited, "thrifty", max_tokens=10 - prompt).status_code == 200
    r = call(limited, "thrifty", max_tokens=1)                      # the window holds what that one used
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60, r.text
    assert call(limited, "old").status_code == 401                  # expired yesterday or long ago: refused
    lines = [json.loads(x) for x in limited.audit_log.read_text().splitlines()]
    assert sum(e["outcome"] == "rate_limited" and e["user"] in ("fast", "thrifty") for e in lines) == 3


def test_keys_list_never_shows_a_key(limited, capsys):
    call(limited, "ops")
    limited.app.keys._used_written = 0          # the server notes last use at most every 30 s
    call(limited, "ops")
    capsys.readouterr()
    assert main(["keys", "list", f"keys={limited.keys_file}"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"fast", "thrifty", "old", "ops", "burst"}
    assert "expired" in rows["old"] and "2999-12-31" in rows["ops"] and " 2 " in rows["fast"]
    assert "never" not in rows["ops"].split("2999-12-31")[1]          # ops has a last use
    assert not any(t in out or t.split("-")[1] in out for t in limited.tokens.values())


def test_metrics_behind_a_key(limited):
    assert httpx.get(limited.url + "/metrics").status_code == 401
    call(limited, "ops", prompt="Jane Doe, MRN 123456, has chest pain")
    call(limited, "burst")
    assert call(limited, "burst").status_code == 429        # its own 429: tests may run in any order
    r = httpx.get(limited.url + "/metrics", headers={"Authorization": f"Bearer {limited.tokens['ops']}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sm70_requests_total{route="/v1/completions",status="200"}' in text
    assert 'sm70_requests_total{route="/v1/completions",status="429"}' in text
    assert "sm70_request_seconds_bucket{le=\"+Inf\"}" in text and "sm70_completion_tokens_total" in text
    assert "sm70_queue_length" in text
    assert not any(s in text for s in ("Jane", "MRN", "fast", "thrifty", "ops", "burst"))
    assert "/metrics" not in limited.audit_log.read_text()     # polled by monitors: no audit line


def test_tls_with_a_self_signed_certificate(tiny_model, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    # no `cryptography` here: the openssl command writes the certificate, for 127.0.0.1 only
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    live = start_server(tiny_model, tmp_path, ssl_certfile=str(cert), ssl_keyfile=str(key))
    try:
        url = live.url.replace("http://", "https://")
        trust = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/health")                          # the system store does not know it
        with pytest.raises(httpx.HTTPError):
            httpx.get(live.url + "/health", timeout=2)          # plain HTTP is not answered
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0,
                          http_client=httpx.Client(verify=trust))
        r = c.chat.completions.create(model="model", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert r.usage.completion_tokens >= 1 and r.model_extra["disclaimer"]
        c.close()   # else the server's shutdown waits out the idle TLS connection
    finally:
        live.stop()


def test_one_key_cannot_fill_the_engine(tiny_model, tmp_path):
    """Finding: rpm does not bound concurrency, so one key could fill the engine's queue and every
    other user got 429 "server busy". Here greedy (in_flight=2 in the keys file) holds two long
    streams in a batch of three; its third request is refused, and another key is still served."""
    keys = tmp_path / "keys.json"
    tokens = {"greedy": add(keys, "greedy", "in_flight=2"), "other": add(keys, "other")}
    live = start_server(tiny_model, tmp_path, keys=str(keys), max_batch=3, max_queue=1, key_in_flight=1)
    auth = {who: {"Authorization": f"Bearer {t}"} for who, t in tokens.items()}
    url = live.url + "/v1/completions"
    long = {"prompt": "The patient", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    short = {"prompt": "The patient", "max_tokens": 3}
    try:
        with httpx.Client(timeout=60) as client, contextlib.ExitStack() as held:
            streams = []
            for _ in range(2):
                r = held.enter_context(client.stream("POST", url, json=long, headers=auth["greedy"]))
                assert r.status_code == 200
                streams.append(r.iter_lines())   # kept: a dropped iterator closes its response
                next(streams[-1])                # admitted and generating
            third = client.post(url, json=short, headers=auth["greedy"])
            assert third.status_code == 429 and third.headers["retry-after"] == "1"
            assert "2 requests in flight" in third.json()["error"]["message"]
            assert client.post(url, json=short, headers=auth["other"]).status_code == 200
            assert live.engine.snapshot()["running"] == 2    # greedy's streams were still going
        deadline = time.monotonic() + 30                       # the server notices the closed streams
        while (code := httpx.post(url, json=short, headers=auth["greedy"], timeout=60).status_code) == 429:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert code == 200
    finally:
        live.stop()
    outcomes = [json.loads(x)["outcome"] for x in live.audit_log.read_text().splitlines()]
    assert "in_flight_limit" in outcomes


def test_two_gateways_share_a_keys_rpm_through_redis(tiny_model, tmp_path, redis_url):
    redis_url, redis = redis_url
    keys = tmp_path / "keys.json"
    tokens = {"shared": add(keys, "shared", "rpm=3"), "other": add(keys, "other", "rpm=3")}
    gateways = [start_server(tiny_model, tmp_path / name, keys=str(keys), limits_storage=redis_url)
                for name in ("a", "b")]
    a, b = gateways

    def status(live, who):
        return httpx.post(live.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60,
                          headers={"Authorization": f"Bearer {tokens[who]}"}).status_code

    try:
        assert [status(a, "shared"), status(b, "shared"), status(a, "shared")] == [200, 200, 200]
        assert [status(b, "shared"), status(a, "shared")] == [429, 429]   # 3 per minute across both
        assert status(b, "other") == 200                                  # per key, not per gateway
        redis.terminate()
        redis.wait(timeout=10)
        assert status(a, "other") == 503              # a limit that cannot be counted is not skipped
        ready = httpx.get(a.url + "/ready", headers={"Authorization": f"Bearer {tokens['other']}"})
        assert ready.status_code == 503 and "limits_storage" in str(ready.json())
    finally:
        for live in gateways:
            live.stop()
