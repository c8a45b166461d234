"""An engine that ends a stream early is never passed off as a whole answer: the gateway in front of
an engine the test scripts (tests/serve/scripted_engine.py) tells the client the answer is
incomplete and audits it as an upstream error, every time, not only when two requests happen to
overlap."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import start_gateway
from .scripted_engine import MODEL, WORDS, ScriptedEngine

openai = pytest.importorskip("openai")


@pytest.fixture
def gateway(tmp_path):
    engine = ScriptedEngine()
    gateway = start_gateway(tmp_path, [engine.url + "/v1"])
    gateway.scripted = engine
    yield gateway
    gateway.stop()
    engine.stop()


def ask(gateway, script: str) -> str:
    """The stream's finish_reason, or "incomplete" when the gateway reported a broken answer."""
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        chunks = list(c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": script}],
                                                stream=True))
    except openai.APIError as e:
        assert "incomplete" in str(e.message), e
        return "incomplete"
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert deltas == WORDS   # each engine event passed on as it came: not buffered, not merged
    return chunks[-1].choices[0].finish_reason


def healthy_again(gateway) -> None:
    deadline = time.monotonic() + 10
    while not httpx.get(gateway.url + "/health").json() == {"status": "ok"} or \
            not all(u["healthy"] for u in httpx.get(gateway.url + "/ready").json()["stats"]["upstreams"]):
        assert time.monotonic() < deadline, "the engine was not taken back"
        time.sleep(0.1)


@pytest.mark.parametrize("script", ["cut", "hangup"])
def test_a_stream_cut_short_is_reported_incomplete(gateway, script):
    assert ask(gateway, "whole") == "stop"
    assert ask(gateway, script) == "incomplete"
    healthy_again(gateway)   # one broken answer takes the engine out until its health probe passes
    assert ask(gateway, "whole") == "stop"
    assert gateway.scripted.requests == ["whole", script, "whole"]
    outcomes = [json.loads(x)["outcome"] for x in gateway.audit_log.read_text().splitlines()]
    assert [o for o in outcomes if o != "streaming"] == ["ok", "upstream_error", "ok"]
