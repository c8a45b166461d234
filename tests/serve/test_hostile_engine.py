"""The gateway in front of an engine that misbehaves on cue (tests/serve/scripted_engine.py): what
the engine sends is capped, checked and never passed on in its own words where it could leak; what
the gateway sends it is only what sm70 documents; and a burst of bad answers never takes every
engine out while one still accepts connections."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from sm70.serve.gateway import proxy

from .conftest import start_gateway
from .scripted_engine import MODEL, WORDS, ScriptedEngine

CAP = 1 << 20   # the caps for these tests; the engine's oversized answers are 3 MiB


@pytest.fixture
def engines(request):
    made = [ScriptedEngine() for _ in range(getattr(request, "param", 1))]
    yield made
    for e in made:
        e.stop()


@pytest.fixture
def gateway(engines, tmp_path, monkeypatch):
    monkeypatch.setattr(proxy, "MAX_BODY", CAP)
    monkeypatch.setattr(proxy, "MAX_LINE", CAP)
    (tmp_path / "upstream.key").write_text("engine-secret-of-the-gateway\n")
    gateway = start_gateway(tmp_path, [e.url + "/v1" for e in engines], upstream_key=str(tmp_path / "upstream.key"))
    yield gateway
    gateway.stop()


def post(gateway, script: str, stream: bool = False, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": script}], "stream": stream, **extra}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)


def upstreams(gateway) -> list[dict]:
    return httpx.get(gateway.url + "/ready").json()["stats"]["upstreams"]


def outcomes(gateway) -> list[str]:
    return [json.loads(x)["outcome"] for x in gateway.audit_log.read_text().splitlines()]


def test_an_oversized_body_fails_the_engine_not_the_gateway(gateway):
    r = post(gateway, "huge-body")
    assert r.status_code == 502 and "a broken answer (EngineOverflow)" in r.json()["error"]["message"], r.text
    assert "x" * 100 not in r.text
    assert post(gateway, "whole").json()["choices"][0]["message"]["content"] == "".join(WORDS)


def test_an_oversized_stream_line_ends_the_answer_as_incomplete(gateway):
    r = post(gateway, "long-line", stream=True)
    events = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert json.loads(events[-2])["error"]["code"] == "upstream_error" and events[-1] == "[DONE]"
    assert "x" * 100 not in r.text and outcomes(gateway)[-1] == "upstream_error"


def test_the_engines_refusal_never_reaches_the_client_in_its_words(gateway, engines):
    r = post(gateway, "refuse")
    assert r.status_code == 502, r.text
    assert "engine-secret" not in r.text and "bad key" not in r.text
    assert "refused the gateway's credential" in r.json()["error"]["message"]
    assert engines[0].seen[-1]["headers"]["authorization"] == "Bearer engine-secret-of-the-gateway"


def test_malformed_usage_is_not_trusted_and_the_slot_is_given_back_once(gateway):
    r = post(gateway, "bad-usage")
    assert r.status_code == 200 and "usage" not in r.json(), r.text
    assert [u["outstanding"] for u in upstreams(gateway)] == [0]
    entry = json.loads(gateway.audit_log.read_text().splitlines()[-1])
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (0, 0)


def test_no_cookie_comes_back_to_the_engine(gateway, engines):
    assert post(gateway, "cookie").status_code == 200
    assert post(gateway, "whole").status_code == 200
    assert "cookie" not in {k.lower() for k in engines[0].seen[-1]["headers"]}


def test_only_documented_fields_reach_the_engine(gateway, engines):
    r = post(gateway, "whole", temperature=0, seed=3, logit_bias={"50256": 100}, best_of=4, prompt_logprobs=5,
             lora_request={"lora_path": "/etc"}, user="someone")
    assert r.status_code == 200, r.text
    sent = engines[0].seen[-1]["body"]
    assert set(sent) == {"model", "messages", "stream", "temperature", "seed", "max_tokens"}, sent
    assert all(set(m) == {"role", "content"} for m in sent["messages"])


def test_two_host_headers_are_refused(gateway):
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: rebind.example\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 421") and b"more than one Host header" in reply


@pytest.mark.parametrize("engines", [2], indirect=True)
def test_a_burst_of_bad_answers_never_ejects_every_engine(gateway, engines):
    assert post(gateway, "cut", stream=True).status_code == 200     # one broken answer ejects nobody
    assert all(u["healthy"] for u in upstreams(gateway))
    for _ in range(8):
        assert post(gateway, "fail").status_code in (502, 503)
    assert sum(u["healthy"] for u in upstreams(gateway)) == 1      # at most half out for their answers
    assert post(gateway, "whole").status_code == 200


@pytest.mark.parametrize("engines", [2], indirect=True)
def test_an_engine_that_refuses_connections_is_out_at_once(gateway, engines):
    engines[0].stop()
    for _ in range(4):
        assert post(gateway, "whole").status_code == 200          # retried on the other
    assert [u["healthy"] for u in upstreams(gateway)] == [False, True]
