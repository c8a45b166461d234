"""`report.md`, `report.html` and `results.png` for one `sm70 eval` run.

Every number is printed with its setting (shots, split, prompt style, scoring mode) and its
uncertainty, beside the published comparators and theirs, because a medical benchmark score
read without its setting is the usual way such numbers mislead. The HTML page is one file
(the chart is embedded) and escapes every string that came from the results.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

from sm70.atomic import atomic_path, write_text
from sm70.eval.published import published_for
from sm70.eval.rag import section_html as rag_section_html, section_md as rag_section_md

TASK_TITLES = {
    "medqa": "MedQA-USMLE",
    "pubmedqa": "PubMedQA",
    "usmle_step1": "USMLE Step 1",
    "usmle_step2": "USMLE Step 2",
    "usmle_step3": "USMLE Step 3",
    "usmle": "USMLE Steps 1-3 pooled",
    "pubmedqa*": "PubMedQA* (question only)",
    "pubmedqa*+rag": "PubMedQA* + retrieval",
    "medqa+rag": "MedQA-USMLE + retrieval",
}
DISCLAIMER = ("sm70 is decision support for clinicians, not a certified medical device. Benchmark "
              "accuracy does not establish that any answer is clinically safe.")
HEADERS = ("Task", "Items", "Setting", "Accuracy", "95% CI", "acc_norm")


# -- numbers and settings ---------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _metric(metric: dict | None) -> str:
    if not metric or metric.get("value") is None:
        return "n/a"
    err = metric.get("stderr")
    return _pct(metric["value"]) + (f" ± {_pct(err)}" if err is not None else "")


def _ci(metric: dict | None) -> str:
    ci = (metric or {}).get("ci95")
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "n/a"


def setting(task: dict) -> str:
    """'5-shot, loglik, prompt lm-eval' — how this run's number was produced."""
    return f"{task.get('shots', '?')}-shot, {task.get('mode', '?')}, prompt {task.get('prompt', '?')}"


def _samples_root() -> Path:
    return Path(str(resources.files("sm70").joinpath("samples"))).resolve()


def is_bundled_sample(task: dict) -> bool:
    """True when the task was scored on the handful of items shipped with sm70, not the benchmark."""
    path = (task.get("data") or {}).get("path")
    if not path:
        return False
    resolved = Path(path).resolve()
    root = _samples_root()
    return resolved == root or root in resolved.parents


def _excluded_summary(task: dict) -> str:
    excluded = task.get("excluded") or []
    if not excluded:
        return "none excluded"
    reasons: dict[str, int] = {}
    for item in excluded:
        reason = str(item.get("reason", "no reason given"))
        reasons[reason] = reasons.get(reason, 0) + 1
    return f"{len(excluded)} excluded (" + "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) + ")"


def _rows(results: dict) -> list[tuple[str, ...]]:
    rows = []
    for name, task in (results.get("tasks") or {}).items():
        metrics = task.get("metrics") or {}
        n, total = task.get("n"), task.get("n_total")
        items = f"{n}/{total}" if total is not None and total != n else f"{n}"
        data = task.get("data") or {}
        title = TASK_TITLES.get(name, name) + (" (bundled sample)" if is_bundled_sample(task) else "")
        if data.get("limit") is not None:
            title += f" (first {data['limit']} of {data.get('items_in_file')}: a subsample)"
        if data.get("sample") is not None:
            title += f" ({data['sample']} of {data.get('items_in_file')} drawn with seed {data.get('seed')})"
        if data.get("one_gold_answer") is not None:
            one_gold = data["one_gold_answer"]
            title += f" (every scored answer is {one_gold!r}: not a measure of the model)"
        rows.append((title, items, setting(task), _metric(metrics.get("acc")), _ci(metrics.get("acc")),
                     _metric(metrics.get("acc_norm"))))
    return rows


def _notes(results: dict) -> list[str]:
    notes = ["Accuracy in percent ± its standard error (sqrt(p(1-p)/(n-1)), as lm-evaluation-harness "
             "reports it); the 95% interval is the Wilson score interval."]
    for name, task in (results.get("tasks") or {}).items():
        title = TASK_TITLES.get(name, name)
        if is_bundled_sample(task):
            notes.append(f"{title}: scored on the bundled sample items shipped with sm70 — a smoke test, "
                         "NOT the benchmark; its accuracy says nothing about the model.")
        notes.append(f"{title}: {task.get('n_total', '?')} items in the data, {task.get('n', '?')} scored, "
                     f"{_excluded_summary(task)}.")
        unparsed = task.get("unparsed") or []
        if unparsed:
            k = len(unparsed)
            notes.append(f"{title}: {k} generated answer{'s' if k != 1 else ''} could not be mapped to a "
                         f"choice and count{'s' if k == 1 else ''} as wrong (listed in results.json).")
    return notes


def _split(task: dict) -> str:
    if is_bundled_sample(task):
        return "bundled sample, not the benchmark"
    path = (task.get("data") or {}).get("path")
    return str(task.get("split") or (f"data: {Path(path).name}" if path else "see results.json"))


def _comparators(results: dict) -> list[tuple[str, ...]]:
    """(task, model, accuracy, setting, split, source) rows: this run first, then the published ones."""
    rows = []
    for name, task in (results.get("tasks") or {}).items():
        title = TASK_TITLES.get(name, name)
        acc = (task.get("metrics") or {}).get("acc")
        rows.append((title, "this run", _metric(acc), setting(task), _split(task), "results.json"))
        for p in published_for(name):
            rows.append((title, p.model, f"{p.value:.1f}", p.setting, p.split,
                         p.source + (f" ({p.note})" if p.note else "")))
    return rows


# -- markdown ---------------------------------------------------------------------------------

def _md(cell: object) -> str:
    # Table cells: a '|' or newline in a data path would break the row, '<' could open raw HTML.
    return str(cell).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_table_md(results: dict) -> str:
    """The compact per-task results table (markdown), for embedding in other reports."""
    return _md_table(HEADERS, _rows(results))


def _report_md(results: dict) -> str:
    model = results.get("model") or {}
    parts = [
        "# sm70 evaluation report\n",
        f"> {DISCLAIMER}\n",
        "## Model\n",
        _md_table(("Field", "Value"), [(k, model.get(k)) for k in ("path", "fingerprint", "adapter",
                                                                     "adapter_fingerprint", "quant")]),
        "## Results\n",
        results_table_md(results),
        *[f"- {_md(n)}" for n in _notes(results)],
        rag_section_md(results),
        "\n## Beside the published numbers\n",
        "A published number is comparable only where its setting matches this run's.\n",
        _md_table(("Task", "Model", "Accuracy", "Setting", "Split", "Source"), _comparators(results)),
        "![accuracy with 95% intervals beside the published numbers](results.png)\n",
        "## Data\n",
        _md_table(("Task", "Path", "sha256"), [(TASK_TITLES.get(n, n), (t.get("data") or {}).get("path"),
                                                (t.get("data") or {}).get("sha256"))
                                               for n, t in (results.get("tasks") or {}).items()]),
        "## Run\n",
        f"sm70 {_md(results.get('sm70_version'))}, started {_md(results.get('started'))}, "
        f"finished {_md(results.get('finished'))}.\n",
        "```json\n" + json.dumps({"config": results.get("config"), "versions": results.get("versions")},
                                 indent=2, default=str).replace("```", "'''") + "\n```\n",
    ]
    return "\n".join(parts)


# -- html -------------------------------------------------------------------------------------

def _html_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def results_table_html(results: dict) -> str:
    """The compact per-task results table (an escaped HTML fragment), for embedding in other reports."""
    return _html_table(HEADERS, _rows(results))


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}.warn{background:#fff4e5;padding:.6rem;"
        "border-left:4px solid #e69500}img{max-width:100%}pre{background:#f6f6f6;padding:.6rem;overflow:auto}")


def _report_html(results: dict, png: bytes) -> str:
    e = html.escape
    model = results.get("model") or {}
    notes = "".join(f"<li>{e(n)}</li>" for n in _notes(results))
    config = json.dumps({"config": results.get("config"), "versions": results.get("versions")},
                        indent=2, default=str)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>sm70 evaluation report</title><style>{_CSS}</style></head><body>"
        "<h1>sm70 evaluation report</h1>"
        f"<p class=\"warn\">{e(DISCLAIMER)}</p>"
        "<h2>Model</h2>"
        + _html_table(("Field", "Value"), [(k, model.get(k)) for k in ("path", "fingerprint", "adapter",
                                                                        "adapter_fingerprint", "quant")])
        + "<h2>Results</h2>" + results_table_html(results) + f"<ul>{notes}</ul>" + rag_section_html(results)
        + "<h2>Beside the published numbers</h2>"
        "<p>A published number is comparable only where its setting matches this run's.</p>"
        + _html_table(("Task", "Model", "Accuracy", "Setting", "Split", "Source"), _comparators(results))
        + f"<img alt=\"accuracy with 95% intervals beside the published numbers\" "
          f"src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
        + "<h2>Run</h2>"
        f"<p>sm70 {e(str(results.get('sm70_version')))}, started {e(str(results.get('started')))}, "
        f"finished {e(str(results.get('finished')))}.</p><pre>{e(config)}</pre>"
        "</body></html>\n"
    )


# -- chart ------------------------------------------------------------------------------------

def render_chart(results: dict) -> bytes:
    """PNG: per task, this run's accuracy with its 95% interval beside the published numbers."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list((results.get("tasks") or {}).items())
    heights = [1 + len(published_for(name)) for name, _ in tasks] or [1]
    fig, axes = plt.subplots(len(heights), 1, figsize=(9, 1.0 + 0.45 * sum(heights) + 0.6 * len(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no tasks in this run", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (name, task) in zip(axes[:, 0], tasks):
        acc = (task.get("metrics") or {}).get("acc") or {}
        sample = " - bundled sample, not the benchmark" if is_bundled_sample(task) else ""
        labels = [f"this run ({setting(task)})"]
        values = [100 * acc["value"] if acc.get("value") is not None else 0.0]
        ci = acc.get("ci95")
        err = [[values[0] - 100 * ci[0]], [100 * ci[1] - values[0]]] if ci else None
        ax.barh([0], values, xerr=err, color="#2c7fb8", capsize=4)
        for i, p in enumerate(published_for(name), start=1):
            labels.append(f"{p.model} ({p.setting})")
            values.append(p.value)
            ax.barh([i], [p.value], color="#bdbdbd")
        for i, v in enumerate(values):
            right = 100 * ci[1] if i == 0 and ci else v  # clear of the error bar
            ax.text(min(right, 100) + 1, i, f"{v:.1f}" if i or acc.get("value") is not None else "n/a",
                    va="center", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_title(f"{TASK_TITLES.get(name, name)} (n={task.get('n')}){sample}", fontsize=9, loc="left")
    axes[-1][0].set_xlabel("accuracy, % (error bar: 95% Wilson interval)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(out_dir: Path, results: dict) -> None:
    """Write report.md, report.html and results.png into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    png = render_chart(results)
    with atomic_path(out_dir / "results.png") as tmp:
        tmp.write_bytes(png)
    write_text(out_dir / "report.md", _report_md(results))
    write_text(out_dir / "report.html", _report_html(results, png))
