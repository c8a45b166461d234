"""`sm70 eval` end to end: outputs and their layout, recipes, generate mode, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.eval.run import EvalConfig, evaluate

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes" / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_load(recipe):
    cfg = load_config(EvalConfig, recipe)
    assert cfg.task_specs()


def test_demo_recipe_writes_every_output(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", str(ROOT / "recipes/eval/demo.yaml"), f"model={tiny_model}", f"out={out}"]) == 0
    for name in ("results.json", "predictions.jsonl", "report.md", "report.html", "results.png", "manifest.json",
                 "config.yaml"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"sm70_version", "model", "config", "versions", "started", "finished", "tasks"}
    assert results["model"]["fingerprint"] and results["model"]["quant"] == "none"
    assert list(results["tasks"]) == ["medqa", "pubmedqa", "usmle"]
    rows = read_rows(out / "predictions.jsonl")
    for name, task in results["tasks"].items():
        mine = [r for r in rows if r["task"] == name]
        assert task["n"] == len(mine) == task["n_total"] - len(task["excluded"])
        assert task["metrics"]["acc"]["value"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))
        lo, hi = task["metrics"]["acc"]["ci95"]
        assert lo <= task["metrics"]["acc"]["value"] <= hi
        assert "acc_norm" in task["metrics"] and len(task["data"]["sha256"]) == 64
        for r in mine:
            assert set(r) == {"task", "id", "gold", "prediction", "correct", "logliks", "pred_norm", "correct_norm"}
    usmle = results["tasks"]["usmle"]
    assert usmle["excluded"] and all(e["reason"] for e in usmle["excluded"])
    assert [r["id"] for r in rows if r["task"] == "pubmedqa"] == \
        list(json.loads((ROOT / "src/sm70/samples/pubmedqa/test_ground_truth.json").read_text()))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["inputs"]["data"]["medqa"]["sha256"]


def test_generate_mode_lists_unparsed(tiny_model, tmp_path):
    out = evaluate(load_config(EvalConfig, model=str(tiny_model), task="pubmedqa", mode="generate", limit=10,
                               max_new_tokens=3, template="medalpaca", out=str(tmp_path)))
    task = json.loads((out / "results.json").read_text())["tasks"]["pubmedqa"]
    rows = read_rows(out / "predictions.jsonl")
    assert task["n"] == 10 and "acc_norm" not in task["metrics"]
    assert {u["id"] for u in task["unparsed"]} == {r["id"] for r in rows if r["extracted"] is None}
    assert all(r["correct"] is (r["extracted"] == r["gold"]) for r in rows)


def test_a_subsample_of_one_answer_is_flagged(tiny_model, tmp_path, capsys):
    """PubMedQA's test file is grouped by answer, so a first-N subsample can hold only "yes" items:
    results.json, the report and stderr say that such a score does not measure the model."""
    flagged = evaluate(load_config(EvalConfig, model=str(tiny_model), task="pubmedqa", limit=1, out=str(tmp_path / "a")))
    task = json.loads((flagged / "results.json").read_text())["tasks"]["pubmedqa"]
    assert task["data"]["one_gold_answer"] == "yes"
    assert "every scored answer is 'yes'" in (flagged / "report.md").read_text()
    assert "use sample=" in capsys.readouterr().err
    mixed = evaluate(load_config(EvalConfig, model=str(tiny_model), task="pubmedqa", limit=4, out=str(tmp_path / "b")))
    assert "one_gold_answer" not in json.loads((mixed / "results.json").read_text())["tasks"]["pubmedqa"]["data"]


@pytest.mark.parametrize("overrides,message", [
    ({"task": "medqa", "tasks": [{"task": "pubmedqa"}]}, "not both"),
    ({}, "no task"),
    ({"task": "medmcqa"}, "unknown task"),
    ({"task": "medqa", "shots": 500}, "500 wanted"),
    ({"task": "medqa", "data": "/nonexistent/medqa.jsonl"}, "/nonexistent"),
    ({"task": "medqa", "cot": True}, "cot=true"),
])
def test_config_errors(tmp_path, overrides, message):
    cfg = load_config(EvalConfig, model="unused", out=str(tmp_path), **overrides)
    with pytest.raises(Sm70Error, match=message):
        evaluate(cfg)


def test_killed_evaluation_resumes(tiny_model, tmp_path):
    args = ["eval", "task=medqa", f"model={tiny_model}", "prompt=option-text", "shots=2", "batch_size=2",
            "chunk_items=2", "limit=16"]
    cmd = [sys.executable, "-m", "sm70.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, f"out={killed}"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        files = list((killed / "cache").glob("*.jsonl")) if (killed / "cache").is_dir() else []
        if files and len(files[0].read_text().splitlines()) >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "manifest.json").exists()
    done_before = sum(len(f.read_text().splitlines()) for f in (killed / "cache").glob("*.jsonl"))

    resumed = subprocess.run([*cmd, f"out={killed}"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done_before} already done" in resumed.stderr
    cache_rows = [r for f in (killed / "cache").glob("*.jsonl") for r in read_rows(f)]
    assert len(cache_rows) == len({r["id"] for r in cache_rows}) == 16  # nothing scored twice

    fresh = tmp_path / "fresh"
    assert main([*args, f"out={fresh}"]) == 0
    a, b = read_rows(killed / "predictions.jsonl"), read_rows(fresh / "predictions.jsonl")
    assert [(r["id"], r["prediction"], r["pred_norm"]) for r in a] == [(r["id"], r["prediction"], r["pred_norm"])
                                                                       for r in b]
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["logliks"], rb["logliks"])) < 1e-4
    ra, rb = (json.loads((d / "results.json").read_text())["tasks"]["medqa"] for d in (killed, fresh))
    assert ra["metrics"] == rb["metrics"]


def test_two_processes_score_shards_and_rank0_gathers(tiny_model, tmp_path):
    args = ["eval", "task=medqa", f"model={tiny_model}", "limit=6", "batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    config = ROOT / "recipes/accelerate/ddp-cpu-2proc.yaml"
    if not config.is_file():
        pytest.skip(f"{config} is not there")
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(config), "-m", "sm70.cli"]
    done = subprocess.run([*launch, *args, f"out={tmp_path / 'dp'}"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = sorted((tmp_path / "dp" / "cache").glob("*.jsonl"))
    assert [len(f.read_text().splitlines()) for f in shards] == [3, 3]  # one shard per process
    assert main([*args, f"out={tmp_path / 'one'}"]) == 0
    a, b = (read_rows(tmp_path / d / "predictions.jsonl") for d in ("dp", "one"))
    assert [(r["id"], r["prediction"]) for r in a] == [(r["id"], r["prediction"]) for r in b]
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra["logliks"], rb["logliks"])) < 1e-4
