"""`sm70 eval task=pubmedqa rag=INDEX` end to end on the tiny model: PubMedQA* without and with the
retrieved snippets on the same items, the paired test, recall@k of the question's own abstract."""

from __future__ import annotations

import json
import shutil

import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.eval.engine import Setting, build_context
from sm70.eval.tasks import get_task, load_task
from sm70.retrieval.index import IndexConfig, build_index
from sm70.samples import sample_path

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pubmed_index(tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs")
    shutil.copy(sample_path("pubmedqa") / "ori_pqal.json", docs / "ori_pqal.json")
    (docs / "notes.md").write_text("# Ward notes\n\nHand hygiene prevents infections.\n")
    out = docs.parent / "pubmed.index"
    build_index(load_config(IndexConfig, docs=str(docs), out=str(out), progress=False))
    return out


def test_pubmedqa_star_with_and_without_retrieval(tiny_model, pubmed_index, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", f"model={tiny_model}", "task=pubmedqa", f"rag={pubmed_index}", "rag_k=3", "limit=6",
                 "template=chat", f"out={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["tasks"]) == ["pubmedqa*", "pubmedqa*+rag"]
    assert results["tasks"]["pubmedqa*+rag"]["data"]["rag"]["k"] == 3
    assert results["tasks"]["pubmedqa*"]["data"]["abstract_removed"] is True
    rag = results["rag"]["tasks"]["pubmedqa"]
    assert rag["n_paired"] == 6 and set(rag["mcnemar"]) == {"b", "c", "p_value"}
    assert rag["recall"]["n"] == 6 and 0 <= rag["recall"]["@1"] <= rag["recall"]["@5"] <= rag["recall"]["@10"] <= 1
    assert rag["recall"]["@10"] > 0.5   # the sample's abstracts are in the index: BM25 finds most of them
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows if r["task"] == "pubmedqa*"]
    assert ids == [r["id"] for r in rows if r["task"] == "pubmedqa*+rag"]
    retrieval = [json.loads(line) for line in (out / "retrieval.jsonl").read_text().splitlines()]
    assert [r["id"] for r in retrieval] == ids and retrieval[0]["hits"][0]["document"] in ("ori_pqal.json", "notes.md")
    report = (out / "report.md").read_text()
    assert "## Retrieval (MIRAGE-style)" in report and "PubMedQA* (question only)" in report
    assert "Retrieval (MIRAGE-style)" in (out / "report.html").read_text()


def test_the_prompt_numbers_the_snippets_and_drops_the_abstract(tiny_model):
    import dataclasses

    from transformers import AutoTokenizer

    task = get_task("pubmedqa")
    item = load_task("pubmedqa")[0]
    star = dataclasses.replace(item, context=(), documents=("First snippet.", "Second snippet."))
    text = build_context(task, star, [], Setting(template="chat"), AutoTokenizer.from_pretrained(tiny_model))
    assert "Relevant documents:\n[1] First snippet.\n[2] Second snippet.\n\nQuestion: " + item.question in text
    assert "Abstract:" not in text and item.context[0] not in text
    plain = build_context(task, item, [], Setting())
    assert plain.startswith("Abstract: ") and "Relevant documents" not in plain   # without rag: unchanged


def test_medqa_with_an_index_that_holds_no_sources(tiny_model, pubmed_index, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", f"model={tiny_model}", "task=medqa", f"rag={pubmed_index}", "limit=4",
                 f"out={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["tasks"]) == ["medqa", "medqa+rag"]
    assert results["rag"]["tasks"]["medqa"]["recall"] is None and results["rag"]["tasks"]["medqa"]["n_paired"] == 4
