"""`sm70 serve model=FILE.gguf`: the real SmolLM2 GGUF in llama.cpp's own llama-server, supervised by a
real `sm70 serve` subprocess and reached through its gateway: answers streamed and not with the
disclaimer and audit lines, no prompt cache across requests, no patient text in the server log, and a
child killed under load: clear errors to its clients, /ready not ready, restarted, answering again."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time

import httpx
import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.serve.main import ServeConfig, check_shape

from .conftest import Engine, free_port, start_server
from .test_real_model import QUESTION, TEMPLATE_TEXT

openai = pytest.importorskip("openai")
MODEL_ID = "model"   # the shared server's served_name
NOTE = "The patient reports chest pain on exertion, relieved by rest, for three weeks. " * 12


@pytest.mark.parametrize("model, engine, chosen", [("x/model-q8_0.gguf", None, "llama.cpp"),
                                                    ("x/model", None, "transformers"),
                                                    ("x/model.gguf", "llama.cpp", "llama.cpp")])
def test_a_gguf_model_chooses_the_llamacpp_engine(model, engine, chosen):
    extra = {"engine": engine} if engine else {}
    cfg = load_config(ServeConfig, model=model, auth="none", **extra)
    assert cfg.engine == chosen and f"engine: {chosen}" in cfg.to_yaml()


@pytest.mark.parametrize("values, message", [
    ({"model": "m.gguf", "engine": "transformers"}, "engine=llama.cpp"),
    ({"model": "m", "slots": 2}, "slots= are for a model=FILE.gguf"),
    ({"upstream": "http://127.0.0.1:9/v1", "kv_cache_type": "q8_0", "prompt_cache": True},
     "kv_cache_type=, prompt_cache= are for a model=FILE.gguf"),
])
def test_settings_for_another_engine_are_refused(tmp_path, values, message):
    cfg = load_config(ServeConfig, auth="none", **values)
    with pytest.raises(Sm70Error, match=message):
        check_shape(cfg)


def test_a_missing_binary_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from sm70.serve.engines.llama_server import find_binary

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Sm70Error, match=r"llama-server is neither beside .* nor on PATH; run `make device`"):
        find_binary(None)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert main(["serve", f"model={gguf}", f"llama_server={tmp_path / 'nowhere'}", "auth=none",
                 f"audit_log={tmp_path / 'audit.log'}"]) == 2
    assert f"llama_server: {tmp_path / 'nowhere'} is not an executable file" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("junk", "is not a GGUF file llama.cpp can read"),
    ("exits", r"llama-server could not serve .* \(it ended with exit code 3\); its last lines:\n  main: no such model"),
    ("not a program", r"llama-server could not serve .* \(it ended with OSError: \[Errno 8\] Exec format error"),
])
def test_a_child_that_cannot_start_is_a_clear_error(case, message, smollm2_gguf, tmp_path, capsys):
    gguf = smollm2_gguf / "model-q8_0.gguf"
    if case == "junk":
        gguf = tmp_path / "junk.gguf"
        gguf.write_bytes(b"GGUF" + bytes(60))
    binary = tmp_path / "llama-server"   # a stand-in that fails as llama-server does on a model it cannot load
    script = "#!/bin/sh\necho 'E main: no such model'\nexit 3\n"
    binary.write_text("not a program" if case == "not a program" else script)
    binary.chmod(0o755)
    assert main(["serve", f"model={gguf}", f"llama_server={binary}", "auth=none",
                 f"audit_log={tmp_path / 'audit.log'}"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err


def client(server, **kw):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0, timeout=120, **kw)


def test_chat_streamed_and_not_ends_at_the_end_of_turn_with_the_disclaimer(gguf_server):
    c = client(gguf_server)
    assert [m.id for m in c.models.list().data] == [MODEL_ID]
    # Once first, so both answers below start from this key's cached prompt: llama.cpp's logits for a
    # prompt read whole and for one read from the cache differ in the last bits (batch shapes), enough
    # to change a greedy answer of a 135M model.
    c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=1, temperature=0)
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


def test_max_tokens_stop_and_seed(gguf_server):
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


def test_a_prompt_longer_than_a_slot_is_refused_with_400(gguf_server):
    r = httpx.post(gguf_server.url + "/v1/completions", headers={"Authorization": f"Bearer {gguf_server.key}"},
                   json={"prompt": "word " * 3000, "max_tokens": 4}, timeout=120)
    assert r.status_code == 400 and "context" in r.json()["error"]["message"], r.text


def ready(server) -> httpx.Response:
    return httpx.get(server.url + "/ready", headers={"Authorization": f"Bearer {server.key}"}, timeout=5)


def test_concurrent_streams_answer_and_the_slots_are_freed(gguf_server):
    results: list = [None] * 4

    def run(i):
        body = {"messages": [{"role": "user", "content": f"Name {i + 2} symptoms of a stroke."}], "max_tokens": 24,
                "temperature": 0, "extra_body": {"ignore_eos": True}}
        results[i] = list(client(gguf_server).chat.completions.create(model=MODEL_ID, stream=True, **body))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(r and r[-1].choices[0].finish_reason == "length" for r in results), results
    stats = ready(gguf_server).json()
    assert stats["max_context"] == 2048 and stats["stats"]["outstanding"] == 0


def test_the_prompt_cache_is_each_keys_own_and_shared_when_asked(smollm2_gguf, tmp_path):
    """llama-server's `timings.prompt_n` counts the prompt tokens it evaluated. By default a key's second
    identical request reads only what its own earlier one did not, and another key's identical request
    is evaluated in full (one slot, so both go through the slot the first key filled); with
    prompt_cache=true llama-server shares every slot's cache."""
    from .conftest import make_key

    body = {"messages": [{"role": "user", "content": NOTE + "What is the likely cause?"}], "max_tokens": 2,
            "temperature": 0}

    def evaluated(server, key=None) -> tuple[int, int]:
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120,
                       headers={"Authorization": f"Bearer {key}"} if key else {}).json()
        return r["timings"]["prompt_n"], r["usage"]["prompt_tokens"]

    keys = tmp_path / "keys.json"
    ward, clinic = make_key(keys, "ward"), make_key(keys, "clinic")
    own = start_server(smollm2_gguf / "model-q8_0.gguf", tmp_path / "own", max_context=2048, slots=1,
                       keys=str(keys))
    try:
        (first, total), (other, _), (again, _) = evaluated(own, ward), evaluated(own, clinic), evaluated(own, ward)
        (clinic_again, _) = evaluated(own, clinic)
    finally:
        own.stop()
    assert total > 150 and first == total and other == total   # the other key starts from nothing
    # one slot, taken in turn by the two keys: neither finds its own cache there again
    assert again == total and clinic_again == total
    two = start_server(smollm2_gguf / "model-q8_0.gguf", tmp_path / "two", max_context=2048, slots=2,
                       keys=str(keys))
    try:
        (first, total), (other, _), (again, _) = evaluated(two, ward), evaluated(two, clinic), evaluated(two, ward)
    finally:
        two.stop()
    assert first == other == total and again < total // 10   # two slots: each key keeps its own
    cached = start_server(smollm2_gguf / "model-q8_0.gguf", tmp_path / "shared", max_context=2048, prompt_cache=True)
    try:
        (first, total), (again, _) = evaluated(cached), evaluated(cached)
    finally:
        cached.stop()
    assert first == total and again < total // 10


def test_the_audit_log_names_the_model_and_verifies(gguf_server):
    c = client(gguf_server)
    before = len(gguf_server.audit_log.read_text().splitlines())
    c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=4, temperature=0)
    list(c.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=4, temperature=0, stream=True))
    entries = [json.loads(line) for line in gguf_server.audit_log.read_text().splitlines()][before:]
    assert [(e["model"], e["upstream"], e["outcome"]) for e in entries] == \
        [(MODEL_ID, "engine-1", "ok"), (MODEL_ID, "engine-1", "streaming"), (MODEL_ID, "engine-1", "ok")]
    assert main(["audit", "verify", str(gguf_server.audit_log)]) == 0


# -- the child killed under load ----------------------------------------------------------------------

SECRET = "Zebulon Quartermaine, born 1931-02-03"


def child_pids(log_text: str) -> list[int]:
    return [int(p) for p in re.findall(r"llama-server started \(pid (\d+)\)", log_text)]


@pytest.fixture
def own_server(smollm2_gguf, llama_server_binary, keys, tmp_path):
    """A `sm70 serve model=FILE.gguf` of its own, logging at debug (llama-server's own lines included)."""
    engine = Engine(smollm2_gguf / "model-q8_0.gguf", tmp_path, free_port(), f"keys={keys['file']}",
                    "max_context=1024", "slots=3", "health_interval_s=0.3", "log_level=debug",
                    log=tmp_path / "serve.log").wait(timeout=180)
    engine.key = keys["alice"]
    yield engine
    engine.stop()


def test_a_killed_child_fails_its_requests_clearly_and_is_restarted(own_server):
    server = own_server
    c = client(server)
    outcomes: list[str] = []
    streaming = threading.Barrier(3)   # two streams have their first words, and the test (3 slots: none waits)

    def stream():
        try:
            chunks = c.chat.completions.create(messages=[{"role": "user", "content": f"{SECRET}: summarise."}],
                                               model="model-q8_0.gguf", max_tokens=900, temperature=0,
                                               stream=True, extra_body={"ignore_eos": True})
            for i, _ in enumerate(chunks):
                if i == 1:
                    streaming.wait(timeout=120)
            outcomes.append("whole")
        except openai.APIError as e:   # the SSE error event mid-stream
            outcomes.append("incomplete" if "incomplete" in str(e.message) else f"other: {e}")

    def plain():
        try:
            c.completions.create(model="model-q8_0.gguf", prompt=SECRET, max_tokens=900,
                                 extra_body={"ignore_eos": True})
            outcomes.append("whole")
        except openai.APIStatusError as e:   # a JSON error body
            outcomes.append(f"http {e.status_code}" if e.body and e.body.get("message") else f"other: {e}")

    threads = [threading.Thread(target=f) for f in (stream, stream, plain)]
    for t in threads:
        t.start()
    streaming.wait(timeout=120)
    [pid] = child_pids(server.log.read_text())
    os.kill(pid, signal.SIGKILL)
    not_ready = ready(server)
    deadline = time.monotonic() + 10
    while not_ready.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
        not_ready = ready(server)
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client hangs"
    assert sorted(outcomes) == ["http 502", "incomplete", "incomplete"], outcomes
    assert not_ready.status_code == 503 and not not_ready.json()["ready"], not_ready.text

    deadline = time.monotonic() + 120
    while ready(server).status_code != 200:
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.2)
    log = server.log.read_text()
    assert len(child_pids(log)) == 2 and "died with signal SIGKILL" in log
    r = c.chat.completions.create(model="model-q8_0.gguf", messages=QUESTION, max_tokens=8, temperature=0)
    assert r.choices[0].message.content and "not a certified medical device" in r.model_extra["disclaimer"]
    assert [e["outcome"] for e in map(json.loads, server.audit_log.read_text().splitlines())].count(
        "upstream_error") == 2
    assert main(["audit", "verify", str(server.audit_log)]) == 0
    # the child's own lines are in the log, at debug; the patient's words are not
    assert "srv" in log and "slot" in log and "Quartermaine" not in log
