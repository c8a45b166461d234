"""Serving through real vLLM (its CPU build, `make vllm`) on SmolLM2 with an sm70 LoRA adapter of rank 64,
the paper's rank (vLLM's default `max_lora_rank` is 16):

- `sm70 serve engine=vllm` (vLLM's engine in sm70's process) and `sm70 serve upstream=` in front of vLLM's
  own OpenAI server both list the adapter as its own model id, and their greedy answers through it,
  streamed and not, equal the merged model's through the transformers engine (all float32);
- the base model id answers the base model, which differs from the adapter's answers;
- an engine core that dies (SIGKILL, as the out-of-memory killer does) turns /health and /ready to 503
  and every request to a 503 that says why, instead of `{"status": "ok"}` over a dead engine.

vLLM runs in .venv-vllm, so its servers are subprocesses; one of each kind serves the whole module
(each start costs 30 s or more). vLLM's own server is told the rank the way sm70 reads it, from
adapter_config.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sm70.config import load_config

from .conftest import free_port, start_gateway, start_server

openai = pytest.importorskip("openai")

PROMPTS = ["What is the first-line treatment for anaphylaxis?", "Which enzyme do statins inhibit?",
           "What are the symptoms of iron-deficiency anemia?", "What does a positive Babinski sign indicate?",
           "How is type 1 diabetes treated?"]
QA = [("What are the symptoms of iron-deficiency anemia?", "Fatigue, pallor, brittle nails and shortness of breath."),
      ("Which enzyme do statins inhibit?", "HMG-CoA reductase."),
      ("What is the first-line treatment for anaphylaxis?", "Intramuscular epinephrine."),
      ("What does a positive Babinski sign indicate in an adult?", "An upper motor neuron lesion.")]
MAX_TOKENS = 24
START_S = 600  # a vLLM start on a busy 2-core machine: imports, engine core and worker processes, model


class VllmProcess:
    """A vLLM server in its own process (`sm70 serve engine=vllm` or vLLM's OpenAI server)."""

    def __init__(self, argv: list[str], env: dict, port: int, log: Path):
        self.port, self.url, self.log = port, f"http://127.0.0.1:{port}", log
        self.proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)

    def wait(self, path: str) -> "VllmProcess":
        deadline = time.monotonic() + START_S
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"vLLM did not start: {self.log.read_text()[-3000:]}"
            time.sleep(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def adapter(smollm2, tmp_path_factory) -> dict:
    """A rank-64 adapter from three `sm70 train` steps on SmolLM2, and the model merged with it."""
    from sm70.model.load import load_tokenizer
    from sm70.render import apply_template
    from sm70.train.merge import MergeConfig, merge
    from sm70.train.sft import TrainConfig, train

    tmp = tmp_path_factory.mktemp("vllm-adapter")
    tok = load_tokenizer(smollm2)
    rows = [{"id": f"q{i}", "source": "test", "prompt": apply_template("chat", "Answer this question truthfully", q,
                                                                         tokenizer=tok), "completion": a}
            for i, (q, a) in enumerate(QA)]
    (tmp / "data").mkdir()
    (tmp / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (tmp / "data" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    run = train(load_config(TrainConfig, model=str(smollm2), data=str(tmp / "data"), out=str(tmp / "run"),
                            quant="none", micro_batch=4, max_length=128, max_steps=3, lr=2e-3, eval_steps=100,
                            save_steps=100, logging_steps=1, lora_r=64, lora_alpha=128))
    merged = merge(load_config(MergeConfig, base=str(smollm2), adapter=str(run / "adapter"), out=str(tmp / "merged")))
    # the served id is the adapter folder's name
    served = tmp / "sm70-r64"
    (run / "adapter").rename(served)
    assert json.loads((served / "adapter_config.json").read_text())["r"] == 64
    return {"path": served, "merged": merged}


@pytest.fixture(scope="module")
def servers(smollm2, adapter, vllm_bin, vllm_env, tmp_path_factory):
    """`sm70 serve engine=vllm`, vLLM's own server behind `sm70 serve upstream=`, and the merged model in
    the transformers engine, all float32; the two vLLM servers start side by side."""
    tmp = tmp_path_factory.mktemp("vllm-serve")
    ours = VllmProcess([str(vllm_bin / "sm70"), "serve", "engine=vllm", f"model={smollm2}",
                        f"adapter={adapter['path']}", "dtype=float32", "enforce_eager=true", "max_context=2048",
                        "auth=none", f"audit_log={tmp / 'audit.log'}", f"port={(port := free_port())}",
                        "log_level=warning"], vllm_env, port, tmp / "sm70-vllm.log")
    rank = json.loads((adapter["path"] / "adapter_config.json").read_text())["r"]
    theirs = VllmProcess([str(vllm_bin / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model",
                          str(smollm2), "--served-model-name", smollm2.name, "--dtype", "float32", "--enforce-eager",
                          "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", str(rank),
                          "--lora-modules", f"{adapter['path'].name}={adapter['path']}",
                          "--host", "127.0.0.1", "--port", str(port := free_port())], vllm_env, port,
                         tmp / "vllm-openai.log")
    started = []
    try:
        merged = start_server(adapter["merged"], tmp, dtype="float32", max_context=2048)
        started.append(merged)
        ours.wait("/health")
        theirs.wait("/v1/models")
        gateway = start_gateway(tmp, [theirs.url + "/v1"])
        started.append(gateway)
        yield {"vllm": ours, "gateway": gateway, "merged": merged, "adapter": adapter["path"].name,
               "base": smollm2.name, "openai": theirs}
    finally:
        for s in started:
            s.stop()
        ours.stop()
        theirs.stop()


def answer(url: str, model: str, prompt: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=300)
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0)
        return reply.choices[0].message.content
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True) if c.choices]
    return "".join(parts)


@pytest.fixture(scope="module")
def merged_answers(servers) -> list[str]:
    merged = servers["merged"]
    return [answer(merged.url, merged.engine.model_ids[0], p, stream=False) for p in PROMPTS]


@pytest.mark.parametrize("front", ["vllm", "gateway"])
def test_the_adapter_is_its_own_model_id(servers, front):
    models = openai.OpenAI(base_url=servers[front].url + "/v1", api_key="none").models.list()
    assert {servers["base"], servers["adapter"]} <= {m.id for m in models.data}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("front", ["vllm", "gateway"])
def test_greedy_answers_through_the_adapter_equal_the_merged_model(servers, merged_answers, front, stream):
    got = [answer(servers[front].url, servers["adapter"], p, stream) for p in PROMPTS]
    assert got == merged_answers


def test_the_base_model_id_answers_without_the_adapter(servers, merged_answers):
    base = [answer(servers["vllm"].url, servers["base"], p, stream=False) for p in PROMPTS]
    assert all(base) and base != merged_answers  # the adapter changed answers, so their match means something


def test_sources_reach_vllm_through_the_gateway(servers, tmp_path):
    """rag= in front of vLLM's own server (the module's; no new vLLM start): the answer cites the index and
    differs from the ungrounded one, so the sources reached the model through its chat template."""
    from sm70.retrieval.index import IndexConfig, build_index
    from tests.retrieval.helpers import make_docs

    docs = make_docs(tmp_path / "docs", bad=False)
    build_index(load_config(IndexConfig, docs=str(docs), out=str(tmp_path / "index"), progress=False))
    gateway = start_gateway(tmp_path, [servers["openai"].url + "/v1"], rag=str(tmp_path / "index"), rag_k=2,
                            rag_min_score=1.0)
    try:
        question = "Which drug relieves an acute asthma attack?"
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", timeout=300)
        messages = [{"role": "user", "content": question}]
        whole = client.chat.completions.create(model=servers["adapter"], messages=messages, max_tokens=MAX_TOKENS,
                                               temperature=0)
        assert [c["document"] for c in whole.model_extra["citations"]][0] == "asthma.html"
        chunks = list(client.chat.completions.create(model=servers["adapter"], messages=messages,
                                                      max_tokens=MAX_TOKENS, temperature=0, stream=True))
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert final[0].model_extra["citations"] == whole.model_extra["citations"]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
        assert whole.choices[0].message.content != answer(servers["gateway"].url, servers["adapter"], question, False)
    finally:
        gateway.stop()


@pytest.mark.last
def test_a_dead_engine_shows_in_health_and_ready(servers):
    """Last in this module (the `last` mark holds in a shuffled order too): it kills the shared engine."""
    import psutil

    url = servers["vllm"].url
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    cores = [p for p in psutil.Process(servers["vllm"].proc.pid).children(recursive=True)
             if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()]
    assert cores, "no EngineCore process under sm70 serve engine=vllm"
    for p in cores:
        os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while httpx.get(url + "/health").status_code != 503:
        assert time.monotonic() < deadline, "/health still answers ok over a dead engine"
        time.sleep(0.5)
    ready = httpx.get(url + "/ready")
    assert ready.status_code == 503 and any("vLLM engine has died" in p for p in ready.json()["problems"])
    r = httpx.post(url + "/v1/chat/completions", json={"model": servers["adapter"], "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": PROMPTS[0]}]})
    assert r.status_code == 503 and "vLLM engine has died" in r.json()["error"]["message"]
    assert servers["vllm"].proc.poll() is None  # the server itself stays up to say so
