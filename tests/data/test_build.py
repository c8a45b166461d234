"""The build end to end: the demo through the CLI, the data card's arithmetic, atomic outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.data import build as build_module
from sm70.data.build import DataConfig, build
from sm70.digest import sha256_file
from sm70.errors import Sm70Error

from .helpers import DISTINCT, config, read_jsonl, rejects, write_json

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "data"
FILES = {"train.jsonl", "val.jsonl", "rejects.jsonl", "datacard.json", "datacard.md", "lengths.png", "manifest.json"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    assert main(["data", "build", str(RECIPES / "demo.yaml"), f"out={out}"]) == 0
    return out


def test_demo_writes_every_output(demo):
    assert {p.name for p in demo.iterdir()} == FILES
    for row in read_jsonl(demo / "train.jsonl") + read_jsonl(demo / "val.jsonl"):
        assert set(row) == {"id", "source", "prompt", "completion"} and row["prompt"] and row["completion"]
    assert read_jsonl(demo / "val.jsonl"), "val_fraction 0.1 leaves some validation rows"


def test_demo_removes_the_planted_rows(demo):
    reasons = [r["reason"] for r in rejects(demo)]
    assert reasons.count("contaminated:medqa") == 1
    assert reasons.count("duplicate") >= 3 and reasons.count("near_duplicate") >= 2
    for r in rejects(demo):
        assert {"source", "line", "record", "reason", "row"} <= set(r)


def test_datacard_counts_add_up(demo):
    card = json.loads((demo / "datacard.json").read_text())
    t = card["totals"]
    assert t["read"] == t["kept"] + sum(t["removed"].values())
    assert t["train"] == len(read_jsonl(demo / "train.jsonl")) and t["val"] == len(read_jsonl(demo / "val.jsonl"))
    assert sum(t["removed"].values()) == len(rejects(demo))
    for s in card["sources"]:
        assert s["read"] == s["kept"] + sum(s["removed"].values())
        assert s["licence"] and s["sha256"]
    assert {b["task"] for b in card["decontamination"]} == {"medqa", "pubmedqa", "usmle"}
    assert "| reason | rows |" in (demo / "datacard.md").read_text()


def test_manifest_hashes_the_outputs(demo):
    manifest = json.loads((demo / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["inputs"]
    for name, digest in manifest["outputs"].items():
        assert sha256_file(demo / name) == digest


def test_build_is_deterministic(demo, tmp_path):
    again = tmp_path / "again"
    assert main(["data", "build", str(RECIPES / "demo.yaml"), f"out={again}"]) == 0
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl"):
        assert (again / name).read_bytes() == (demo / name).read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is a dev extra")
def test_medqa_mc_prompts_equal_lm_eval(tmp_path):
    from lm_eval.tasks.medqa.preprocess_medqa import doc_to_text

    out = build(load_config(DataConfig, RECIPES / "medqa-mc.yaml", [f"out={tmp_path / 'mc'}"]))
    rows = read_jsonl(out / "train.jsonl")
    items = read_jsonl(Path(build_module.__file__).parents[1] / "samples" / "medqa" / "test.jsonl")
    assert len(rows) == len(items) == 40
    for row, item in zip(rows, items):
        doc = {"sent1": item["question"], **{f"ending{i}": item["options"][k] for i, k in enumerate("ABCD")}}
        assert row["prompt"] == doc_to_text(doc)
        assert row["completion"] == " " + item["answer_idx"]


def test_interrupted_build_leaves_no_partial_output(tmp_path, monkeypatch):
    cfg = config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", DISTINCT))}])
    real = build_module.mix.is_validation
    calls = {"n": 0}

    def crash_midway(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the operator pressed Ctrl-C while train.jsonl is half written
        return real(*args)

    monkeypatch.setattr(build_module.mix, "is_validation", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    assert not cfg.out.exists() and list(tmp_path.iterdir()) == [tmp_path / "r.json"]


def test_interrupted_rebuild_keeps_the_previous_output(tmp_path, monkeypatch):
    cfg = config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", DISTINCT))}])
    build(cfg)
    before = (cfg.out / "train.jsonl").read_bytes()
    monkeypatch.setattr(build_module, "markdown", lambda card: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build(cfg)
    assert (cfg.out / "train.jsonl").read_bytes() == before and (cfg.out / "manifest.json").is_file()


def test_out_that_is_not_a_data_build_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(Sm70Error, match="not the output of an earlier data build"):
        build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", DISTINCT))}]))
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_cli_errors_are_clean(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "input": "b"}\n')
    assert main(["data", "build", str(RECIPES / "demo.yaml"), f"out={tmp_path / 'o'}",
                 f"sources=[{{name: s, path: {bad}}}]"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: output: missing" in err and "Traceback" not in err


def test_parallel_workers_give_the_same_output(tmp_path):
    topics = ["asthma", "gout", "anemia", "sepsis", "migraine", "psoriasis", "lupus", "cirrhosis"]
    rows = [{"instruction": "Answer this question truthfully",
             "input": f"What is fact number {i} about {topics[i % 8]} in patient group {i // 8}?",
             "output": f"Fact {i}: {topics[i % 8]} affects group {i // 8} through mechanism {i * 7919 % 1000}."}
            for i in range(2300)]
    rows[1500] = dict(rows[10])                                   # an exact copy in a later chunk
    rows[2200]["input"] = read_jsonl(Path(build_module.__file__).parents[1] / "samples" / "medqa" / "test.jsonl")[5]["question"]
    path = write_json(tmp_path / "r.json", rows)
    outs = []
    for workers in (1, 2):
        cfg = config(tmp_path / f"w{workers}", [{"name": "s", "path": str(path)}], workers=workers, val_fraction=0.1,
                     decontaminate=[{"task": "medqa", "path": "samples://medqa/test.jsonl"}])
        outs.append(build(cfg))
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    assert [(r["record"], r["reason"]) for r in rejects(outs[1])][:2] == [(1500, "duplicate"), (2200, "contaminated:medqa")]


def test_chat_template_and_real_token_counts(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    path = write_json(tmp_path / "r.json", DISTINCT)
    out = build(config(tmp_path, [{"name": "s", "path": str(path)}], template="chat", tokenizer=str(tiny_model)))
    row = read_jsonl(out / "train.jsonl")[0]
    assert "[INST]" in row["prompt"] and row["prompt"].rstrip().endswith("[/INST]")
    card = json.loads((out / "datacard.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert card["token_lengths"]["max"] == max(len(tok(r["prompt"] + r["completion"])["input_ids"])
                                               for r in read_jsonl(out / "train.jsonl"))
    assert card["token_count"] == f"tokenizer {tiny_model}"
