"""report.md / report.html / results.png from a results dict shaped like `sm70 eval`'s results.json."""

import html
import re

import pytest

from sm70.eval.published import PUBLISHED, published_for
from sm70.eval.report import (
    is_bundled_sample,
    results_table_html,
    results_table_md,
    write_report,
)
from sm70.eval.stats import accuracy_summary
from sm70.samples import sample_path

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def metric(correct):
    s = accuracy_summary(correct)
    return {"value": s["acc"], "stderr": s["stderr"], "ci95": s["ci95"]}


def task(n_right, n_wrong, *, mode="loglik", prompt="lm-eval", shots=0, path="/data/medqa/test.jsonl",
         excluded=(), unparsed=(), norm=True):
    correct = [True] * n_right + [False] * n_wrong
    metrics = {"acc": metric(correct)}
    if norm:
        metrics["acc_norm"] = metric(correct[::-1][: len(correct) - 1] + [True])
    return {"n": len(correct), "n_total": len(correct) + len(excluded), "mode": mode, "prompt": prompt,
            "shots": shots, "metrics": metrics, "excluded": list(excluded), "unparsed": list(unparsed),
            "data": {"path": str(path), "sha256": "ab" * 32}}


@pytest.fixture
def results():
    return {
        "sm70_version": "0.1.0",
        "model": {"path": f"/models/{EVIL}", "fingerprint": "f" * 16, "adapter": None,
                  "adapter_fingerprint": None, "quant": "nf4"},
        "config": {"task": ["medqa", "pubmedqa", "usmle_step1"], "note": EVIL},
        "versions": {"torch": "2.13", "transformers": "5.24"},
        "started": "2026-11-28T23:00:00Z",
        "finished": "2026-11-28T23:05:00Z",
        "tasks": {
            "medqa": task(764, 509, shots=5, prompt="option-text"),
            "pubmedqa": task(3, 2, path=sample_path("pubmedqa"), norm=False),
            "usmle_step1": task(2, 1, mode="generate", prompt="chat", path=sample_path("usmle"), norm=False,
                                excluded=[{"id": "step1-4", "reason": "refers to an image that is not in the text"},
                                          {"id": "step1-9", "reason": "refers to an image that is not in the text"},
                                          {"id": "step1-7", "reason": f"gold letter not among the options {EVIL}"}],
                                unparsed=[{"id": "step1-2", "text": EVIL}]),
        },
    }


def test_writes_three_files(tmp_path, results):
    write_report(tmp_path, results)
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report.md").stat().st_size > 500 and (tmp_path / "report.html").stat().st_size > 500
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries behind


def test_markdown_states_every_setting_and_caveat(tmp_path, results):
    write_report(tmp_path, results)
    md = (tmp_path / "report.md").read_text()
    assert "not a certified medical device" in md
    assert "| MedQA-USMLE | 1273 | 5-shot, loglik, prompt option-text | 60.0 ± 1.4 | 57.3–62.7 |" in md
    assert "USMLE Step 1 (bundled sample)" in md and "PubMedQA (bundled sample)" in md
    assert "NOT the benchmark" in md
    assert "3 excluded (gold letter not among the options" in md
    assert "refers to an image that is not in the text: 2" in md
    assert "1 generated answer could not be mapped to a choice and counts as wrong" in md
    assert "Wilson" in md and "sqrt(p(1-p)/(n-1))" in md
    for p in published_for("medqa") + published_for("pubmedqa"):
        assert f"| {p.model} | {p.value:.1f} | {p.setting} |" in md
    assert "arXiv 2305.12031" in md and "arXiv 2311.16079" in md
    # Raw HTML is inert only inside the fenced config block, which renderers show literally.
    assert "<script>" not in re.sub(r"```json\n.*?```", "", md, flags=re.S)


def test_html_is_self_contained_and_escapes_every_string(tmp_path, results):
    write_report(tmp_path, results)
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "onerror=alert(1)>" not in page
    assert html.escape(EVIL) in page  # shown, as text
    assert re.search(r'<img alt="[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]+">', page)
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "not a certified medical device" in page


def test_compact_tables_for_the_pipeline_report(results):
    md = results_table_md(results)
    assert md.splitlines()[0] == "| Task | Items | Setting | Accuracy | 95% CI | acc_norm |"
    assert len(md.strip().splitlines()) == 2 + 3
    assert "| USMLE Step 1 (bundled sample) | 3/6 | 0-shot, generate, prompt chat | 66.7 ± 33.3 |" in md
    frag = results_table_html(results)
    assert frag.startswith("<table>") and frag.count("<tr>") == 4


def test_task_with_no_scored_items_renders(tmp_path, results):
    results["tasks"]["usmle_step3"] = {"n": 0, "n_total": 2, "mode": "loglik", "prompt": "lm-eval", "shots": 0,
                                       "metrics": {"acc": {"value": None, "stderr": None, "ci95": None}},
                                       "excluded": [{"id": "step3-1", "reason": "image"}] * 2, "unparsed": [],
                                       "data": {"path": "/d", "sha256": "0"}}
    write_report(tmp_path, results)
    assert "| USMLE Step 3 | 0/2 | 0-shot, loglik, prompt lm-eval | n/a | n/a | n/a |" in (tmp_path / "report.md").read_text()


def test_bundled_sample_detection(tmp_path):
    assert is_bundled_sample({"data": {"path": str(sample_path("medqa", "test.jsonl"))}})
    assert not is_bundled_sample({"data": {"path": str(tmp_path / "medqa" / "test.jsonl")}})
    assert not is_bundled_sample({"data": {}})


def test_published_records_are_complete_and_cited():
    assert len(PUBLISHED) == 12
    for p in PUBLISHED:
        assert p.task in {"medqa", "pubmedqa", "usmle"} and 0 < p.value < 100
        assert re.search(r"arXiv \d{4}\.\d{5}", p.source), p
        assert set(p.as_dict()) >= {"model", "task", "value", "shots", "split", "source"}
    camel = {p.task: p.value for p in PUBLISHED if p.model == "Clinical Camel-70B"}
    assert camel == {"medqa": 60.7, "pubmedqa": 77.9, "usmle": 64.3}
