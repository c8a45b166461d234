"""`sm70 eval backend=llama.cpp model=FILE.gguf` against the HF backend on the same items: on the F32
GGUF with an F32 key/value cache, every per-choice log-likelihood within 1e-3 and the same answers;
greedy generation through llama.cpp gives the HF backend's text."""

from __future__ import annotations

import json
import os

import pytest

from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.eval.run import EvalConfig, evaluate

if not os.environ.get("CI"):  # in CI llama.cpp is built first: a missing one must fail, not skip
    pytest.importorskip("llama_cpp", reason="llama.cpp is built by `make test` (the device extra)")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

N = 6
SETTINGS = {"lm-eval": dict(prompt="lm-eval"), "chat-template": dict(prompt="option-text", template="chat")}


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def run(tmp_path_factory, model, name, **settings):
    tasks = [{"task": "medqa", "sample": N}, {"task": "pubmedqa", "sample": N}]
    return rows(evaluate(load_config(EvalConfig, model=str(model), tasks=tasks, batch_size=4,
                                     out=str(tmp_path_factory.mktemp(name)), **settings)))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_llama_cpp_logliks_equal_the_hf_backend_on_the_f32_gguf(smollm2, smollm2_gguf, tmp_path_factory, setting):
    hf = run(tmp_path_factory, smollm2, "hf", **SETTINGS[setting])
    ours = run(tmp_path_factory, smollm2_gguf / "model-f32.gguf", "gguf", backend="llama.cpp", kv_cache="f32",
               threads=1, **SETTINGS[setting])
    assert [(r["task"], r["id"]) for r in ours] == [(r["task"], r["id"]) for r in hf] and len(hf) == 2 * N
    worst = max(abs(a - b) for x, y in zip(hf, ours) for a, b in zip(x["logliks"], y["logliks"]))
    assert worst <= 1e-3, f"largest log-likelihood difference {worst:.2e}"
    assert [r["prediction"] for r in ours] == [r["prediction"] for r in hf]


def test_generation_through_llama_cpp_gives_the_hf_text(smollm2, smollm2_gguf, tmp_path_factory):
    settings = dict(mode="generate", template="chat", max_new_tokens=12, tasks=[{"task": "medqa", "sample": 3}])
    hf = rows(evaluate(load_config(EvalConfig, model=str(smollm2), out=str(tmp_path_factory.mktemp("g-hf")),
                                   **settings)))
    ours = rows(evaluate(load_config(EvalConfig, model=str(smollm2_gguf / "model-f32.gguf"), backend="llama.cpp",
                                     kv_cache="f32", threads=1, out=str(tmp_path_factory.mktemp("g-gguf")),
                                     **settings)))
    assert [r["text"] for r in ours] == [r["text"] for r in hf]
    assert all(r["text"] and "<|im_end|>" not in r["text"] for r in ours)


@pytest.mark.parametrize("settings, message", [
    ({"model": "not-a-file.gguf"}, "must be a .gguf file"),
    ({"adapter": "some-adapter"}, "merge the adapter and export it"),
])
def test_llama_cpp_backend_input_errors(smollm2_gguf, tmp_path, settings, message):
    base = {"model": str(smollm2_gguf / "model-q8_0.gguf"), "task": "medqa", "limit": 1, "out": str(tmp_path)}
    with pytest.raises(Sm70Error, match=message):
        evaluate(load_config(EvalConfig, backend="llama.cpp", **{**base, **settings}))
