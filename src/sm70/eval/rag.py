"""`sm70 eval ... rag=INDEX rag_k=5`: each task scored without and with retrieval on the same items,
as MIRAGE (Xiong et al. 2024, MedRAG) measures medical RAG.

Retrieval reads the question only. PubMedQA becomes PubMedQA* (`pubmedqa*`: the abstract removed,
the question alone) and `pubmedqa*+rag` adds the k snippets; a multiple-choice task is scored as it
is and as `<task>+rag`. The snippets are numbered before the question and go through the run's
template (`template=chat`: the model's chat template). The pair is compared item by item with the
paired bootstrap and McNemar's exact test of `sm70 compare`; for PubMedQA the report also gives the
retrieval recall@k of the question's own abstract (its PMID is the record id of a chunk), which says
whether the index could have helped at all. `retrieval.jsonl` lists what each question retrieved.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from sm70.eval.compare import compare_task, format_p

RECALL_KS = (1, 5, 10)
WITHOUT, WITH = "{}", "{}+rag"


def variant_names(task: str) -> tuple[str, str]:
    base = "pubmedqa*" if task == "pubmedqa" else task
    return WITHOUT.format(base), WITH.format(base)


def expand(cfg, specs: list, prepared: list) -> tuple[list, list, dict]:
    """Each (spec, prepared task) becomes two: without and with retrieval. Returns the new specs, the
    new prepared tuples and the retrieval of every item ({task: {id: hits}})."""
    from sm70.retrieval.citations import snippet
    from sm70.retrieval.search import Index

    index = Index(cfg.rag)
    depth = max(cfg.rag_k, *RECALL_KS)
    print(f"rag: {cfg.rag} (fingerprint {index.fingerprint[:12]}, retrievers {', '.join(index.built)}), "
          f"k={cfg.rag_k}", file=sys.stderr)
    new_specs, new_prepared, retrieved = [], [], {}
    for spec, (task, items, shots, data) in zip(specs, prepared):
        without, with_ = variant_names(spec.task)
        strip = task.layout == "abstract"  # PubMedQA*: the question alone
        items = [dataclasses.replace(i, context=()) if strip else i for i in items]
        shots = [dataclasses.replace(s, context=()) if strip else s for s in shots]
        scored = [i for i in items if i.excluded is None]
        hits = index.search([i.question for i in scored], depth, cfg.rag_retriever)
        by_id = dict(zip((i.id for i in scored), hits))
        with_items = [dataclasses.replace(i, documents=tuple(snippet(h, cfg.rag_snippet_chars)
                                                             for h in by_id[i.id][:cfg.rag_k]))
                      if i.id in by_id else i for i in items]
        base = {**data, "abstract_removed": strip} if strip else data
        rag = {"index": str(Path(cfg.rag).resolve()), "fingerprint": index.fingerprint, "k": cfg.rag_k,
               "retriever": index.resolve(cfg.rag_retriever), "snippet_chars": cfg.rag_snippet_chars}
        new_specs += [spec.model_copy(update={"task": without}), spec.model_copy(update={"task": with_})]
        new_prepared += [(task, items, shots, base), (task, with_items, shots, {**base, "rag": rag})]
        retrieved[spec.task] = by_id
    return new_specs, new_prepared, retrieved


def recall(by_id: dict[str, list[dict]]) -> dict | None:
    """Recall@k of each item's own record (PubMedQA: the PMID); None when the index holds none of them."""
    ranks = {}
    for item_id, hits in by_id.items():
        ranks[item_id] = next((h["rank"] for h in hits if h.get("record") == item_id), None)
    if not any(r is not None for r in ranks.values()):
        return None
    n = len(ranks)
    return {f"@{k}": sum(r is not None and r <= k for r in ranks.values()) / n for k in RECALL_KS} | {"n": n}


def summarize(cfg, tasks: dict, predictions: list[dict], retrieved: dict, out: Path) -> dict:
    """results.json's `rag` block: per task, accuracy without and with retrieval on the paired items."""
    rows = {}
    for task, by_id in retrieved.items():
        without, with_ = variant_names(task)
        a = {r["id"]: {"gold": r["gold"], "correct": r["correct"], "line": "?"} for r in predictions
             if r["task"] == without}
        b = {r["id"]: {"gold": r["gold"], "correct": r["correct"], "line": "?"} for r in predictions
             if r["task"] == with_}
        paired = compare_task(a, b, f"{out}/predictions.jsonl ({without})",
                              f"{out}/predictions.jsonl ({with_})", 10000, cfg.seed)
        rows[task] = {"without": without, "with": with_, "k": cfg.rag_k, **paired,
                      "recall": recall(by_id) if tasks[with_]["data"].get("abstract_removed") else None}
    from sm70.atomic import write_text

    write_text(out / "retrieval.jsonl", "".join(
        json.dumps({"task": task, "id": item_id, "hits": [{k: h[k] for k in ("rank", "score", "chunk", "document",
                                                                             "title", "location", "record")}
                                                          for h in hits]}, ensure_ascii=False) + "\n"
        for task, by_id in retrieved.items() for item_id, hits in by_id.items()))
    return {"index": str(Path(cfg.rag).resolve()), "k": cfg.rag_k, "tasks": rows}


HEADERS = ("Task", "Items", "Without retrieval", "With retrieval (k={k})", "With − without (95% CI)",
           "McNemar b/c, p", "Recall@1", "Recall@5", "Recall@10")


def table_rows(rag: dict) -> list[tuple[str, ...]]:
    out = []
    for task, t in rag["tasks"].items():
        if not t["n_paired"]:
            continue
        lo, hi = t["diff_ci95"]
        rec = t.get("recall") or {}
        title = "PubMedQA* (question only)" if task == "pubmedqa" else task
        out.append((title, str(t["n_paired"]), f"{100 * t['acc_a']['acc']:.1f}", f"{100 * t['acc_b']['acc']:.1f}",
                    f"{100 * t['diff']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})",
                    f"{t['mcnemar']['b']}/{t['mcnemar']['c']}, {format_p(t['mcnemar']['p_value'])}",
                    *(f"{rec[f'@{k}']:.3f}" if rec else "n/a" for k in RECALL_KS)))
    return out


def section_md(results: dict) -> str:
    rag = results.get("rag")
    if not rag:
        return ""
    headers = tuple(h.format(k=rag["k"]) for h in HEADERS)
    lines = ["## Retrieval (MIRAGE-style)\n", f"Index `{rag['index']}`; retrieval reads the question only; "
             "accuracy in percent on the same items, paired bootstrap interval and exact McNemar test "
             "(b: right without retrieval only, c: right with it only). Recall@k: the question's own abstract "
             "among the first k chunks (PubMedQA; n/a where the index does not hold the items' sources).\n",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table_rows(rag)]
    return "\n".join(lines) + "\n"


def section_html(results: dict) -> str:
    import html

    rag = results.get("rag")
    if not rag:
        return ""
    head = "".join(f"<th>{html.escape(h.format(k=rag['k']))}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(rag))
    return (f"<h2>Retrieval (MIRAGE-style)</h2><p>Index {html.escape(rag['index'])}; question-only retrieval; "
            f"paired on the same items.</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

