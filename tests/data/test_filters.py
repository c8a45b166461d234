"""Decontamination, deduplication and mixing, each on rows built to pass or fail it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sm70.data import mix
from sm70.data.build import build
from sm70.data.clean import clean_text, gram_keys, match_words
from sm70.data.config import DecontamConfig
from sm70.data.decontam import Decontaminator
from sm70.data.sources import resolve_path
from sm70.data.standardize import Example
from sm70.data.verdict import _line
from sm70.eval.tasks import load_task
from sm70.samples import sample_path

from .helpers import DISTINCT, alpaca, config, read_jsonl, rejects, write_json

MEDQA = [json.loads(line) for line in sample_path("medqa", "test.jsonl").read_text().splitlines()]
QUESTION = MEDQA[3]["question"]


def leak(text: str) -> str:
    """Re-cased, re-spaced and re-punctuated, as a scraped copy would be."""
    return text.upper().replace(" ", "   ").replace(",", " ;").replace(".", "!").replace("-", " - ")


@pytest.mark.parametrize("planted", [
    QUESTION,
    leak(QUESTION),
    "Case for review: " + leak(QUESTION)[40:300] + " Discuss.",   # most of it, inside other text
    "Options: " + " / ".join(MEDQA[3]["options"].values()) + ". " + " ".join(QUESTION.split()[-25:]),
])
def test_planted_test_question_is_removed_and_unrelated_rows_kept(tmp_path, planted):
    rows = [*DISTINCT[:3], alpaca(planted, MEDQA[3]["answer"]), *DISTINCT[3:]]
    out = build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", rows))}],
                       decontaminate=[{"task": "medqa", "path": "samples://medqa/test.jsonl"}]))
    assert [(r["record"], r["reason"]) for r in rejects(out)] == [(3, "contaminated:medqa")]
    assert len(read_jsonl(out / "train.jsonl")) == len(DISTINCT)


def test_a_stock_phrase_is_not_contamination_a_copied_passage_is():
    deco = Decontaminator.from_configs([DecontamConfig(task="medqa", path="samples://medqa/test.jsonl")])
    words = match_words(QUESTION + " " + " ".join(MEDQA[3]["options"].values()))
    filler = match_words("an unrelated sentence about hand hygiene on the ward " * 3)
    assert deco.match(filler + words[:12] + filler) is None
    assert deco.match(filler + words[5:18] + filler) is None, "one shared 13-gram: a vignette template"
    half = len(words) // 2
    assert deco.match(filler + words[:half] + filler) == "medqa"
    assert deco.match(filler + words[half:] + filler) == "medqa"


@pytest.mark.parametrize("task, path", [("pubmedqa", "samples://pubmedqa"), ("usmle_step2", "samples://usmle")])
def test_each_benchmark_indexes_its_test_text(task, path):
    item = load_task(task, resolve_path(path))[0]
    part = item.context[-1] if item.context else " ".join([item.question, *item.options.values()])
    deco = Decontaminator.from_configs([DecontamConfig(task=task, path=path)])
    assert deco.match(match_words("Background reading. " + part)) == task
    assert deco.match(match_words(DISTINCT[0]["output"] * 3)) is None


def test_boilerplate_shared_by_many_test_items_is_not_evidence(tmp_path):
    deco = Decontaminator()
    stock = "which of the following is the most appropriate next step in the management of this patient"
    deco.add("t", 13, 0.3, ([f"case {i} unique words number {i} here {stock}"] for i in range(30)))
    deco.finish()
    assert deco.match(match_words("A new vignette. " + stock)) is None
    assert deco.match(match_words(f"case 7 unique words number 7 here {stock}")) == "t"


def test_exact_and_near_duplicates_removed_first_kept(tmp_path):
    long = alpaca("What are the symptoms of asthma?",
                  "Common symptoms include shortness of breath, wheezing, chest tightness and a cough that is "
                  "often worse at night or early in the morning, and after exercise or exposure to cold air.")
    exact = dict(long, input="  what are the SYMPTOMS of asthma ", output=long["output"].replace(",", ""))
    near = dict(long, output=long["output"][:-1] + " in winter.")
    rows = [long, *DISTINCT, exact, near]
    out = build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", rows))}]))
    assert [(r["record"], r["reason"]) for r in rejects(out)] == [(7, "duplicate"), (8, "near_duplicate")]
    assert read_jsonl(out / "train.jsonl")[0]["id"] == "s-0"


def test_distinct_questions_with_a_shared_layout_are_kept(tmp_path):
    out = build(config(tmp_path, [{"name": "mc", "path": "samples://medqa/test.jsonl", "format": "medqa",
                                   "split": "test"}]))
    assert rejects(out) == [] and len(read_jsonl(out / "train.jsonl")) == 40


def test_dedup_across_sources(tmp_path):
    a = write_json(tmp_path / "a.json", DISTINCT[:4])
    b = write_json(tmp_path / "b.json", DISTINCT[2:])
    out = build(config(tmp_path, [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b)}]))
    assert [(r["source"], r["reason"]) for r in rejects(out)] == [("b", "duplicate")] * 2


def test_over_long_rows_removed(tmp_path):
    rows = [*DISTINCT, alpaca("Summarise the guideline.", "word " * 3000)]
    out = build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", rows))}], max_tokens=512))
    [reject] = rejects(out)
    assert reject["reason"] == "too_long" and "> max_tokens 512" in reject["detail"]


@pytest.mark.parametrize("text, words", [
    ("The  patient's B.P. was 120/80", [b"the", b"patient", b"s", b"b", b"p", b"was", b"120", b"80"]),
    ("Caf\u00e9 STRA\u00dfE x_y", ["café".encode(), b"strasse", b"x_y"]),   # non-ASCII path, casefolded
])
def test_match_words(text, words):
    assert match_words(text) == words


@pytest.mark.parametrize("raw, cleaned", [
    ("  two  spaces\there ", "two spaces here"),
    ("line \r\nnext\r\n\r\n\r\n\r\nlast", "line\nnext\n\nlast"),
    ("cafe\u0301", "caf\u00e9"),            # NFC
    ("a\u00a0b", "a b"),
])
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


@pytest.mark.parametrize("kept, weights, target, expected", [
    ({"a": 100, "b": 50}, {"a": 1, "b": 1}, None, {"a": 100, "b": 50}),
    ({"a": 100, "b": 50}, {"a": 1, "b": 2}, None, {"a": 100, "b": 100}),
    ({"a": 100, "b": 50}, {"a": 1, "b": 1}, 30, {"a": 20, "b": 10}),
    ({"a": 10, "b": 10, "c": 10}, {"a": 1, "b": 1, "c": 1}, 10, {"a": 4, "b": 3, "c": 3}),
    ({"a": 10, "b": 0}, {"a": 1, "b": 5}, 25, {"a": 25, "b": 0}),
])
def test_quotas(kept, weights, target, expected):
    q = mix.quotas(kept, weights, target)
    assert q == expected and (target is None or sum(q.values()) == target)


@pytest.mark.parametrize("n, quota", [(10, 4), (10, 10), (10, 25), (0, 0)])
def test_copies_are_seeded_and_sum_to_quota(n, quota):
    a = mix.copies(n, quota, 0, "s")
    assert int(a.sum()) == quota and np.array_equal(a, mix.copies(n, quota, 0, "s"))
    assert not np.array_equal(a, mix.copies(n, quota, 1, "s")) or quota in (0, n, 2 * n) or n == 0


def test_target_rows_and_weights_in_a_build(tmp_path):
    a = write_json(tmp_path / "a.json", DISTINCT[:4])
    b = write_json(tmp_path / "b.json", DISTINCT[4:])
    out = build(config(tmp_path, [{"name": "a", "path": str(a)}, {"name": "b", "path": str(b), "weight": 2}],
                       target_rows=16, val_fraction=0.25, seed=3))
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "val.jsonl")
    assert len(rows) == 16 and len({r["id"] for r in rows}) == 16
    assert sum(r["source"] == "b" for r in rows) == 8       # 2 rows x weight 2 = half the shares
    val_ids = {r["id"].split("~")[0] for r in read_jsonl(out / "val.jsonl")}
    assert not val_ids & {r["id"].split("~")[0] for r in read_jsonl(out / "train.jsonl")}


@pytest.mark.parametrize("words, k, step", [(list(b"abcdefghijklmnopq"), 7, 7), (list(b"abcdefghijklmnop"), 6, 7),
                                            (list(b"abcdefg"), 7, 7), (list(b"abcdef"), 7, 7), (list(b"abcde"), 2, 1)])
def test_gram_keys_cover_the_runs_at_each_step(words, k, step):
    words = [bytes([w]) for w in words]
    runs = [tuple(words[i:i + k]) for i in range(0, len(words) - k + 1, step)]
    assert list(gram_keys(words, k, step)) == [hash(r) for r in runs]


@pytest.mark.parametrize("text", ["plain", 'quote " and \\ backslash', "caf\u00e9 \u03bcg \u2028 \u2029", "tab\tnew\nline \x00\x1f",
                                  "emoji \U0001f489 and surrogate-free", ""])
def test_training_line_is_exactly_json_dumps(text):
    example = Example(f"### Input:\n{text}\n\n### Response:", " " + text, text)
    expected = json.dumps({"id": "s-1", "source": "s", "prompt": example.prompt, "completion": example.completion},
                          ensure_ascii=False) + "\n"
    assert _line("s-1", "s", example) == expected
