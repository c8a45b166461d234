"""A real chat model served: answers end at its end-of-turn token, streamed or not, with no template text."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve.conftest import start_server

TEMPLATE_TEXT = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "assistant\n", "<|im")
QUESTION = [{"role": "user", "content": "Is the heart an organ? Answer with one word."}]


@pytest.fixture(scope="module")
def real_server(smollm2, tmp_path_factory):
    live = start_server(smollm2, tmp_path_factory.mktemp("real-serve"), max_context=2048)
    yield live
    live.stop()


def test_a_served_answer_ends_at_the_end_of_turn_token(real_server):
    r = httpx.post(f"{real_server.url}/v1/chat/completions", timeout=120,
                   json={"messages": QUESTION, "max_tokens": 48, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    text = choice["message"]["content"]
    assert text.strip() and not any(t in text for t in TEMPLATE_TEXT), text
    assert choice["finish_reason"] == "stop", (choice, text)  # ended by <|im_end|>, not by max_tokens
    assert body["usage"]["completion_tokens"] < 48
    assert "not a certified medical device" in json.dumps(body)


def test_a_streamed_answer_is_the_same_and_ends_the_same_way(real_server):
    pieces, finish = [], None
    with httpx.stream("POST", f"{real_server.url}/v1/chat/completions", timeout=120,
                      json={"messages": QUESTION, "max_tokens": 48, "temperature": 0, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                pieces.append(choice.get("delta", {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
    text = "".join(pieces)
    assert text.strip() and not any(t in text for t in TEMPLATE_TEXT), text
    assert finish == "stop"
    plain = httpx.post(f"{real_server.url}/v1/chat/completions", timeout=120,
                       json={"messages": QUESTION, "max_tokens": 48, "temperature": 0}).json()
    assert plain["choices"][0]["message"]["content"] == text  # greedy: the same answer both ways
