"""`sm70 serve model=FILE.gguf`: the real SmolLM2 GGUF served by llama.cpp in a real `sm70 serve`
subprocess, through the official openai client: answers end at the end-of-turn token, streams keep
/health answering, and the audit log verifies."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.serve.main import ServeConfig, check_shape

from .conftest import Engine, free_port
from .test_real_model import QUESTION, TEMPLATE_TEXT

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")
MODEL_ID = "model-q8_0.gguf"


@pytest.mark.parametrize("model, engine, chosen", [("x/model-q8_0.gguf", None, "llama.cpp"),
                                                    ("x/model", None, "transformers"),
                                                    ("x/model.gguf", "llama.cpp", "llama.cpp")])
def test_a_gguf_model_chooses_the_llamacpp_engine(model, engine, chosen):
    extra = {"engine": engine} if engine else {}
    cfg = load_config(ServeConfig, model=model, auth="none", **extra)
    assert cfg.engine == chosen and f"engine: {chosen}" in cfg.to_yaml()


def test_a_gguf_with_another_engine_is_refused(tmp_path):
    cfg = load_config(ServeConfig, model=str(tmp_path / "m.gguf"), engine="transformers", auth="none")
    with pytest.raises(Sm70Error, match="engine=llama.cpp"):
        check_shape(cfg)


@pytest.fixture(scope="module")
def gguf_server(smollm2_gguf, keys, tmp_path_factory):
    engine = Engine(smollm2_gguf / MODEL_ID, tmp_path_factory.mktemp("gguf-serve"), free_port(),
                    f"keys={keys['file']}", "max_context=2048").wait(timeout=120)
    engine.key = keys["alice"]
    yield engine
    engine.kill()


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0, timeout=120)


def test_chat_streamed_and_not_ends_at_the_end_of_turn(gguf_server):
    c = client(gguf_server)
    assert [m.id for m in c.models.list().data] == [MODEL_ID]
    r = c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=48, temperature=0)
    text = r.choices[0].message.content
    assert text.strip() and not any(t in text for t in TEMPLATE_TEXT), text
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 48
    assert "not a certified medical device" in r.model_extra["disclaimer"]

    chunks = list(c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=48, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text  # greedy
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert "not a certified medical device" in chunks[0].model_extra["disclaimer"]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_max_tokens_ends_with_length_and_a_seed_repeats(gguf_server):
    c = client(gguf_server)
    r = c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    sampled = [c.completions.create(model=MODEL_ID, prompt="The patient", max_tokens=12, temperature=0.9,
                                    top_p=0.9, seed=7, extra_body={"ignore_eos": True}).choices[0].text
               for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0].strip()
    stopped = c.completions.create(model=MODEL_ID, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0,
                                   stop=[" 6"])
    assert stopped.choices[0].finish_reason == "stop" and " 6" not in stopped.choices[0].text


QUESTIONS = [[{"role": "user", "content": q}] for q in ("What does the liver do?", "Name a symptom of a stroke.")]


def stream(server, body: dict) -> tuple[str, str | None]:
    pieces, finish = [], None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {server.key}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    pieces.append(choice.get("delta", {}).get("content") or "")
                    finish = choice.get("finish_reason") or finish
    return "".join(pieces), finish


def ready(server) -> dict:
    return httpx.get(server.url + "/ready", headers={"Authorization": f"Bearer {server.key}"}).json()


def test_concurrent_streams_decode_together_while_health_answers(gguf_server):
    bodies = [{"messages": q, "max_tokens": 32, "temperature": 0, "ignore_eos": True} for q in QUESTIONS * 2]
    alone = [stream(gguf_server, body) for body in bodies[:2]]
    results, slowest = [None] * 4, []

    def run(i):
        results[i] = stream(gguf_server, bodies[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert httpx.get(gguf_server.url + "/health", timeout=5).status_code == 200
        slowest.append(time.monotonic() - started)
        time.sleep(0.1)
    assert results == alone * 2      # greedy: the same answers side by side as one at a time
    assert all(finish == "length" for _, finish in results)
    assert len(slowest) >= 5 and max(slowest) < 1.0, slowest
    stats = ready(gguf_server)
    assert stats["max_context"] == 2048 and stats["stats"]["engine"] == "llama.cpp"
    assert stats["stats"]["max_batch_seen"] >= 2 and stats["stats"]["errors"] == 0


def test_a_client_that_leaves_frees_its_sequence(gguf_server):
    before = ready(gguf_server)["stats"]["cancelled"]
    with httpx.stream("POST", gguf_server.url + "/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {gguf_server.key}"},
                      json={"messages": QUESTION, "max_tokens": 400, "ignore_eos": True, "stream": True}) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 20
    while ready(gguf_server)["stats"]["cancelled"] == before:
        assert time.monotonic() < deadline, "the abandoned request kept decoding"
        time.sleep(0.2)
    assert ready(gguf_server)["stats"]["running"] == 0


def test_a_long_prompt_asked_again_reuses_its_cache_and_answers_the_same(gguf_server):
    note = "The patient reports chest pain on exertion, relieved by rest, for three weeks. " * 18
    body = {"messages": [{"role": "user", "content": note + "What is the likely cause?"}], "max_tokens": 12,
            "temperature": 0}
    before = ready(gguf_server)["stats"]["reused_tokens"]
    first, second = (stream(gguf_server, body) for _ in range(2))
    assert first == second and first[0].strip()
    assert ready(gguf_server)["stats"]["reused_tokens"] - before >= 256   # a whole prompt chunk, kept


def test_the_audit_log_verifies(gguf_server):
    # its own requests: in a shuffled order it may run before the module's other tests
    c = client(gguf_server)
    c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=4, temperature=0)
    list(c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=4, temperature=0, stream=True))
    entries = [json.loads(line) for line in gguf_server.audit_log.read_text().splitlines()]
    assert len(entries) >= 3 and {e["model"] for e in entries if e.get("model")} == {MODEL_ID}
    assert main(["audit", "verify", str(gguf_server.audit_log)]) == 0
