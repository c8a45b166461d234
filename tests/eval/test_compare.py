"""`sm70 compare A B` on hand-built run directories (no model needed)."""

import json

import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.eval.compare import (
    CompareConfig,
    compare,
    compare_runs,
    compare_table_md,
    verdict,
)


def write_run(path, rows, tasks=None, model="base"):
    """An `sm70 eval` output dir: rows are (task, id, gold, correct[, correct_norm])."""
    path.mkdir(parents=True)
    with open(path / "predictions.jsonl", "w") as f:
        for row in rows:
            task, id_, gold, correct = row[:4]
            rec = {"task": task, "id": id_, "gold": gold, "prediction": gold if correct else "Z",
                   "correct": correct}
            if len(row) > 4:
                rec["correct_norm"] = row[4]
            f.write(json.dumps(rec) + "\n")
    tasks = tasks or {t: {"n": 0, "mode": "loglik", "prompt": "lm-eval", "shots": 0} for t, *_ in rows}
    (path / "results.json").write_text(json.dumps({"model": {"path": model, "fingerprint": "f"}, "tasks": tasks}))
    return path


def pairs(task, a_correct, b_correct, start=0):
    """Rows for A and B over the same ids."""
    ra = [(task, str(start + i), "A", x) for i, x in enumerate(a_correct)]
    rb = [(task, str(start + i), "A", x) for i, x in enumerate(b_correct)]
    return ra, rb


def test_cli_compare_reports_mcnemar_and_bootstrap(tmp_path, capsys):
    # medqa: 9 items only B gets right, 1 only A gets right, 10 both right -> p = 0.0215, B better.
    a1, b1 = pairs("medqa", [True] * 1 + [False] * 9 + [True] * 10, [False] * 1 + [True] * 9 + [True] * 10)
    # pubmedqa: identical -> no difference; plus one item that only A scored.
    a2, b2 = pairs("pubmedqa", [True, False, True], [True, False, True])
    a2.append(("pubmedqa", "only-in-a", "yes", True))
    run_a = write_run(tmp_path / "runA", a1 + a2)
    run_b = write_run(tmp_path / "runB", b1 + b2)

    assert main(["compare", str(run_a), str(run_b)]) == 0
    out = tmp_path / "compare-runA-vs-runB"
    comparison = json.loads((out / "compare.json").read_text())
    medqa = comparison["tasks"]["medqa"]
    assert medqa["n_paired"] == 20 and medqa["only_a"] == 0
    assert medqa["mcnemar"] == {"b": 1, "c": 9, "p_value": pytest.approx(0.021484375)}
    assert medqa["acc_a"]["acc"] == pytest.approx(11 / 20) and medqa["acc_b"]["acc"] == pytest.approx(19 / 20)
    assert medqa["diff"] == pytest.approx(0.4)
    lo, hi = medqa["diff_ci95"]
    assert 0 < lo < 0.4 < hi
    assert medqa["verdict"] == "B better than A at p=0.021"
    pub = comparison["tasks"]["pubmedqa"]
    assert (pub["n_paired"], pub["only_a"], pub["only_b"]) == (3, 1, 0)
    assert pub["verdict"].startswith("no significant difference")
    md = (out / "compare.md").read_text()
    assert "B better than A at p=0.021" in md and "Only A" in md and "not a certified medical device" in md
    printed = capsys.readouterr().out
    assert "medqa" in printed and "compare.json" in printed


def test_out_seed_and_metric_options(tmp_path):
    ra = [("medqa", str(i), "B", i % 2 == 0, True) for i in range(30)]
    rb = [("medqa", str(i), "B", i % 3 == 0, i % 5 != 0) for i in range(30)]
    run_a, run_b = write_run(tmp_path / "a", ra), write_run(tmp_path / "b", rb)
    out = tmp_path / "elsewhere"
    assert main(["compare", str(run_a), str(run_b), f"out={out}", "metric=acc_norm", "seed=3", "n_boot=500"]) == 0
    c = json.loads((out / "compare.json").read_text())
    assert (c["metric"], c["seed"], c["n_boot"]) == ("acc_norm", 3, 500)
    assert c["tasks"]["medqa"]["acc_a"]["acc"] == 1.0 and c["tasks"]["medqa"]["acc_b"]["acc"] == pytest.approx(24 / 30)
    again = compare_runs(load_config(CompareConfig, run_a=run_a, run_b=run_b, metric="acc_norm", seed=3, n_boot=500))
    assert again["tasks"]["medqa"]["diff_ci95"] == c["tasks"]["medqa"]["diff_ci95"]


def test_a_better_than_b_direction(tmp_path):
    a, b = pairs("usmle", [True] * 12, [False] * 12)
    cfg = load_config(CompareConfig, run_a=write_run(tmp_path / "a", a), run_b=write_run(tmp_path / "b", b))
    assert compare_runs(cfg)["tasks"]["usmle"]["verdict"] == "A better than B at p<0.001"


@pytest.mark.parametrize("diff,p,expected", [
    (0.1, 0.003, "B better than A at p=0.003"),
    (-0.1, 0.0004, "A better than B at p<0.001"),
    (0.1, 0.2, "no significant difference (p=0.200)"),
    (0.0, 1.0, "no significant difference (p=1.000)"),
])
def test_verdict_wording(diff, p, expected):
    assert verdict(diff, p) == expected


def test_task_missing_from_one_run_is_reported_not_dropped(tmp_path):
    a, b = pairs("medqa", [True, False], [True, True])
    a += [("usmle_step1", "step1-1", "C", True), ("usmle_step1", "step1-2", "D", False)]
    c = compare(load_config(CompareConfig, run_a=write_run(tmp_path / "a", a), run_b=write_run(tmp_path / "b", b)))
    step1 = json.loads((c / "compare.json").read_text())["tasks"]["usmle_step1"]
    assert step1 == {"n_paired": 0, "only_a": 2, "only_b": 0, "verdict": "no items in common",
                     "setting_a": "0-shot, loglik, prompt lm-eval", "setting_b": None}
    assert "| usmle_step1 | 0 | 2 | 0 |" in (c / "compare.md").read_text()


def test_different_settings_are_pointed_out(tmp_path):
    a, b = pairs("medqa", [True, False, True], [True, True, True])
    run_a = write_run(tmp_path / "a", a, {"medqa": {"mode": "loglik", "prompt": "lm-eval", "shots": 0}})
    run_b = write_run(tmp_path / "b", b, {"medqa": {"mode": "loglik", "prompt": "lm-eval", "shots": 5}})
    out = compare(load_config(CompareConfig, run_a=run_a, run_b=run_b))
    assert "settings differ for medqa" in (out / "compare.md").read_text()


def _run_pair(tmp_path, rows_a, rows_b):
    return [str(write_run(tmp_path / "a", rows_a)), str(write_run(tmp_path / "b", rows_b))]


@pytest.mark.parametrize("rows_a,rows_b,message", [
    ([("medqa", "1", "A", True)], [("medqa", "2", "A", True)], "share no (task, id) items"),
    ([("medqa", "1", "A", True)], [("pubmedqa", "1", "yes", True)], "share no (task, id) items"),
    ([("medqa", "1", "A", True)], [("medqa", "1", "C", True)], "gold: item '1' has gold 'A' in A but 'C' in B"),
    ([("medqa", "1", "A", True), ("medqa", "1", "A", False)], [("medqa", "1", "A", True)],
     "predictions.jsonl:2: id: '1' appears twice in task 'medqa' (first on line 1)"),
])
def test_clear_errors(tmp_path, capsys, rows_a, rows_b, message):
    assert main(["compare", *_run_pair(tmp_path, rows_a, rows_b)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_acc_norm_needs_loglik_runs(tmp_path, capsys):
    runs = _run_pair(tmp_path, [("medqa", "1", "A", True)], [("medqa", "1", "A", True)])
    assert main(["compare", *runs, "metric=acc_norm"]) == 2
    assert "predictions.jsonl:1: correct_norm: missing (acc_norm exists only for loglik runs" in capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ("{not json", "predictions.jsonl:2: not valid JSON"),
    ('["a list"]', "predictions.jsonl:2: expected a JSON object"),
    ('{"task": "medqa", "gold": "A", "correct": true}', "predictions.jsonl:2: id: missing"),
    ('{"task": "medqa", "id": "9", "gold": "A", "correct": "yes"}', "predictions.jsonl:2: correct: expected true or false"),
])
def test_malformed_prediction_lines_name_file_and_line(tmp_path, line, message):
    run_a = write_run(tmp_path / "a", [("medqa", "1", "A", True)])
    run_b = write_run(tmp_path / "b", [("medqa", "1", "A", True)])
    with open(run_b / "predictions.jsonl", "a") as f:
        f.write(line + "\n")
    with pytest.raises(Sm70Error, match=message.replace("(", r"\(")):
        compare_runs(load_config(CompareConfig, run_a=run_a, run_b=run_b))


def test_missing_run_directory_is_a_clean_error(tmp_path, capsys):
    run_a = write_run(tmp_path / "a", [("medqa", "1", "A", True)])
    assert main(["compare", str(run_a), str(tmp_path / "nope")]) == 2
    assert "nope/predictions.jsonl: not found" in capsys.readouterr().err


def test_compare_table_md_for_pipeline_report(tmp_path):
    a, b = pairs("medqa", [True, False, False, True], [True, True, True, True])
    c = compare_runs(load_config(CompareConfig, run_a=write_run(tmp_path / "a", a), run_b=write_run(tmp_path / "b", b)))
    table = compare_table_md(c)
    assert table.splitlines()[0].startswith("| Task | Paired |")
    assert "| medqa | 4 | 0 | 0 | 50.0 | 100.0 | +50.0 (" in table
