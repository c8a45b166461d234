"""The whole chain as a user meets it: `sm70 demo` offline, a re-run that does nothing, a changed data
recipe that re-runs data, training and evaluation, and a training stage killed with SIGKILL that resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm70.cli import main

ROOT = Path(__file__).resolve().parents[2]
SM70 = [sys.executable, "-m", "sm70.cli"]
# A shorter training run than the demo recipe's, with checkpoints early enough to kill one.
FAST = ["set.train.set.max_steps=24", "set.train.set.save_steps=6", "set.train.set.eval_steps=6"]


def offline_prefix() -> list[str]:
    """`unshare -n`: a network namespace with no interfaces, so any connection attempt fails at once."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        return ["unshare", "-n"]
    return []


def sm70(*args: str, offline: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SM70_ALLOW_HUB", None)
    proc = subprocess.run([*(offline_prefix() if offline else []), *SM70, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"sm70 {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def stage_lines(proc) -> dict[str, str]:
    """{'data': 'running' | 'up to date' | 'resuming', ...} from the pipeline's progress lines."""
    found = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        for word in ("running", "up to date", "resuming"):
            if f": {word}" in line:
                found[line.split(":")[0].split()[-1]] = word
    return found


def fresh_checkpoint(folder: Path, since: float) -> bool:
    try:
        return any(p.name.startswith("checkpoint-") and p.stat().st_mtime > since for p in folder.iterdir())
    except FileNotFoundError:  # the pipeline moves a stale training folder aside before it restarts
        return False


@pytest.mark.slow
def test_demo_offline_skip_change_and_resume(tmp_path):
    if not offline_prefix():
        pytest.skip("unshare -n is not permitted here; the offline part of this test needs it")
    out = tmp_path / "demo"

    first = sm70("demo", f"out={out}", *FAST)
    assert set(stage_lines(first).values()) == {"running"}
    for name in ("report.md", "report.html", "data/datacard.json", "train/adapter/adapter_config.json",
                 "eval-base/results.json", "eval-tuned/results.json", "compare/compare.json"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "not a certified medical device" in report and "Results" in report and "paired" in report.lower()
    assert "sm70 serve" in first.stdout + first.stderr
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "<script" not in html
    metrics = [json.loads(l) for l in (out / "train/metrics.jsonl").read_text().splitlines()]
    vals = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    assert vals[-1] < vals[0], "validation loss should go down in the demo"

    again = sm70("demo", f"out={out}", *FAST)
    assert "nothing to do" in again.stdout + again.stderr
    assert set(stage_lines(again).values()) == {"up to date"}

    # Change the data recipe (through an override) and kill the training it triggers mid-run.
    changed = [*FAST, "set.data.set.val_fraction=0.2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.time()  # the finished run's checkpoints are still there until training restarts
    proc = subprocess.Popen([*offline_prefix(), *SM70, "demo", f"out={out}", *changed], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = out / "train" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not fresh_checkpoint(checkpoints, started):
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before a checkpoint could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    resumed = sm70("demo", f"out={out}", *changed)
    stages = stage_lines(resumed)
    assert stages["data"] == "up to date"          # the data stage had finished before the kill
    assert stages["train"] == "resuming"
    assert stages["eval_tuned"] == "running" and stages["compare"] == "running"
    assert (out / "report.md").is_file()
    card = json.loads((out / "data/datacard.json").read_text())
    assert "0.2" in json.dumps(card)


@pytest.mark.parametrize("device, verdict", [
    (["train.set.device_memory_gb=48"], "FITS"),
    (["train.set.device_memory_gb=24"], "DOES NOT FIT"),
    # FSDP + QLoRA: every process loads the whole 4-bit base first (transformers 5.25), ~35 GiB for 70B.
    (["train.set.device_memory_gb=24", "train.set.processes=2", "train.set.sharding=fsdp"], "DOES NOT FIT"),
    (["train.set.device_memory_gb=48", "train.set.processes=2", "train.set.sharding=fsdp"], "FITS"),
])
def test_plan_for_the_paper_run_runs_nothing(tmp_path, capsys, device, verdict):
    out = tmp_path / "sm70"
    assert main(["run", "recipes/pipeline/sm70-llama2-70b.yaml", f"out={out}", "plan=true", *device]) == 0
    text = capsys.readouterr().out
    assert "training memory plan" in text and f"-> {verdict} (" in text
    assert "estimated time" in text and "sm70 serve" in text
    assert not out.exists()


def test_unknown_pipeline_key_is_named(tmp_path, capsys):
    assert main(["run", "recipes/pipeline/demo.yaml", "trian.recipe=x"]) == 2
    assert "unknown key 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("allow_hub", [False, True])
def test_hub_access_without_network_fails_fast_and_clearly(tmp_path, allow_hub):
    """Offline by default; and even with the hub allowed, a dead network is an error at once, not retries."""
    if not offline_prefix():
        pytest.skip("unshare -n is not permitted here")
    recipe = tmp_path / "hub.yaml"
    recipe.write_text("sources:\n  - {name: flashcards, catalog: flashcards}\n")
    env = {**os.environ, "SM70_ALLOW_HUB": "1" if allow_hub else "0"}
    for args in (["data", "build", str(recipe), f"out={tmp_path / 'data'}"],
                 ["eval", "task=medqa", "model=meta-llama/Llama-2-7b-hf", f"out={tmp_path / 'eval'}"]):
        started = time.time()
        proc = subprocess.run([*offline_prefix(), *SM70, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert time.time() - started < 30
        assert "Traceback" not in proc.stderr
        assert ("cannot be reached" if allow_hub else "SM70_ALLOW_HUB=1") in proc.stderr
        assert not (tmp_path / "data").exists()


def test_rag_evaluation_runs_for_base_and_tuned(tmp_path, capsys):
    """`index:` builds the pipeline's own index; an `evals:` setting that names `rag` scores base and
    tuned model without and with it (PubMedQA*), and a changed document re-runs exactly those stages."""
    from sm70.samples import sample_path

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(sample_path("pubmedqa") / "ori_pqal.json", docs / "ori_pqal.json")
    (docs / "ward.md").write_text("# Ward notes\n\nHand hygiene prevents infections.\n")
    index_recipe = tmp_path / "index.yaml"
    index_recipe.write_text(f"docs: {docs}\nout: unused\nretrievers: [bm25]\n")
    eval_recipe = tmp_path / "rag.yaml"
    eval_recipe.write_text("model: unused\nout: unused\nmode: loglik\nrag: unused\nrag_k: 2\nlimit: 4\n"
                           "tasks: [{task: pubmedqa}]\n")
    out = tmp_path / "run"
    args = ["demo", f"out={out}", "set.train.set.max_steps=2", "set.train.set.eval_steps=2",
            "set.train.set.save_steps=2", "set.eval.set.limit=2", f"set.index.recipe={index_recipe}",
            f"set.evals.rag.recipe={eval_recipe}"]
    assert main(args) == 0
    for side in ("base", "tuned"):
        results = json.loads((out / f"eval-{side}-rag" / "results.json").read_text())
        assert list(results["tasks"]) == ["pubmedqa*", "pubmedqa*+rag"]
        assert results["tasks"]["pubmedqa*+rag"]["data"]["rag"]["k"] == 2
        assert results["rag"]["tasks"]["pubmedqa"]["recall"]["n"] == 4
    assert (out / "compare-rag" / "compare.json").is_file()
    assert json.loads((out / "index" / "manifest.json").read_text())["status"] == "complete"

    (docs / "ward.md").write_text("# Ward notes\n\nHand hygiene prevents most infections.\n")
    capsys.readouterr()
    assert main(args) == 0
    seen = capsys.readouterr()
    both = subprocess.CompletedProcess(args, 0, stdout=seen.out, stderr=seen.err)
    ran = {name for name, word in stage_lines(both).items() if word == "running"}
    assert ran == {"index", "eval_base.rag", "eval_tuned.rag", "compare.rag"}
