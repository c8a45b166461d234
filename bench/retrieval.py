"""Retrieval: sm70's default retriever and the hybrid against the plain BM25 anchor of issue 19.

Corpus: the 1,000 PubMedQA-L abstracts (one chunk each, the abstract's sections without the question
or the conclusion) plus every Medical Meadow row (instruction, input and output) as distractors:
21,851 documents; this layout reproduces the issue's anchor figures (recall@1/5/10 0.852/0.938/0.958).
Queries: the 500 PubMedQA test questions; target: the question's own abstract (recall@k: it is among
the first k). The anchor is bm25s with English stop words and Snowball stemming, built here straight
from the JSON files; sm70's runs go through `sm70 index build` on the same files (linked into a
folder) and `Index.search`. Then a synthetic corpus of 1M chunks (words drawn from the real corpus's
word frequencies) is indexed by `sm70 index build` in a child process (its peak memory is the
index's) and searched one question at a time.

    python bench/retrieval.py --data ../shared/data --work /tmp/sm70-bench-retrieval
        [--dense-model DIR] [--synthetic 1000000] [--skip-synthetic]

The dense index is kept in --work, so a second run embeds nothing (the incremental build reuses it).
Ends with one line: `retrieval: default recall@5 ...x BM25 anchor (...), hybrid ...x; 1M chunks p50 ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KS = (1, 5, 10)


def meadow_files(data: Path, names: str | None) -> list[Path]:
    files = sorted((data / "medical_meadow").glob("*.json"))
    return [f for f in files if names is None or f.name in names.split(",")]


def corpus(data: Path, names: str | None = None) -> tuple[list[str], list[str], dict[str, str], list[str]]:
    """(doc ids, texts, PMID -> question, test PMIDs); ids are PMIDs for abstracts."""
    pqal = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    test = list(json.loads((data / "pubmedqa" / "test_ground_truth.json").read_text()))
    ids = list(pqal)
    texts = [" ".join(r["CONTEXTS"]) for r in pqal.values()]
    for f in meadow_files(data, names):
        for i, row in enumerate(json.loads(f.read_text())):
            ids.append(f"{f.name}:{i}")
            texts.append("\n\n".join(p.strip() for p in (row["instruction"], row["input"], row["output"]) if p.strip()))
    return ids, texts, {p: r["QUESTION"] for p, r in pqal.items()}, test


def recall(ranked: list[list[str]], targets: list[str]) -> dict[int, float]:
    return {k: sum(t in r[:k] for r, t in zip(ranked, targets)) / len(targets) for k in KS}


def anchor(texts, ids, questions) -> tuple[list[list[str]], dict]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    model = bm25s.BM25()
    model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    build = time.perf_counter() - t0
    q = bm25s.tokenize(questions, stopwords="en", stemmer=stemmer, show_progress=False)
    t0 = time.perf_counter()
    docs, _ = model.retrieve(q, k=max(KS), show_progress=False, n_threads=0)
    query = (time.perf_counter() - t0) / len(questions)
    return [[ids[j] for j in row] for row in docs], {"build_s": build, "query_s": query}


def link_docs(data: Path, folder: Path, names: str | None = None) -> Path:
    (folder / "pubmedqa").mkdir(parents=True, exist_ok=True)
    (folder / "medical_meadow").mkdir(parents=True, exist_ok=True)
    pairs = [(data / "pubmedqa" / "ori_pqal.json", folder / "pubmedqa" / "ori_pqal.json")]
    pairs += [(f, folder / "medical_meadow" / f.name) for f in meadow_files(data, names)]
    for src, dst in pairs:
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return folder


def sm70_run(docs: Path, out: Path, questions: list[str], retrievers: list[str], dense_model: str | None,
             retriever: str = "auto") -> tuple[list[list[str]], dict]:
    from sm70.config import load_config
    from sm70.retrieval.index import IndexConfig, build_index
    from sm70.retrieval.search import Index

    overrides = {"retrievers": retrievers, "progress": sys.stderr.isatty()}
    if dense_model:
        overrides["dense"] = {"model": dense_model, "max_seq_length": 128}
    t0 = time.perf_counter()
    build_index(load_config(IndexConfig, docs=str(docs), out=str(out), **overrides))
    build = time.perf_counter() - t0
    index = Index(out)
    index.search(questions[:1], 1, retriever)  # load the retrievers (and a model) before timing
    times, ranked = [], []
    for q in questions:
        t0 = time.perf_counter()
        hits = index.search([q], max(KS), retriever)[0]
        times.append(time.perf_counter() - t0)
        ranked.append([h["record"] if h["document"].startswith("pubmedqa/") else h["document"] for h in hits])
    manifest = index.manifest
    return ranked, {"build_s": build, "chunks": manifest["counts"]["chunks"], "p50_s": statistics.median(times),
                    "timings": manifest["timings"]}


def synthetic(texts: list[str], n: int, folder: Path, seed: int = 0) -> Path:
    """n records of 60-140 words drawn from the real corpus's word frequencies, as one JSONL file."""
    import re

    words, counts = np.unique(re.findall(r"[a-z]{2,}", " ".join(texts).lower()), return_counts=True)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(60, 141, size=n)
    draws = rng.choice(len(words), size=int(lengths.sum()), p=counts / counts.sum())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "synthetic.jsonl"
    with open(path, "w") as f:
        at = 0
        for i, length in enumerate(lengths):
            f.write(json.dumps({"id": str(i), "text": " ".join(words[draws[at:at + length]])}) + "\n")
            at += length
    return path.parent


def synthetic_run(texts: list[str], questions: list[str], n: int, work: Path) -> dict:
    docs = work / f"synthetic-{n}"
    if not (docs / "synthetic.jsonl").is_file():
        t0 = time.perf_counter()
        synthetic(texts, n, docs)
        print(f"  synthetic corpus of {n:,} chunks written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    out = work / f"synthetic-{n}.index"
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-m", "sm70.cli", "index", "build", f"docs={docs}", f"out={out}",
                    "progress=false"], check=True, env=env, stderr=subprocess.DEVNULL)
    build = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    from sm70.retrieval.search import Index

    index = Index(out)
    index.search(questions[:1], 10)
    times = []
    for q in questions:
        t0 = time.perf_counter()
        index.search([q], 10)
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"chunks": index.manifest["counts"]["chunks"], "build_s": build, "peak_bytes": peak,
            "p50_s": statistics.median(times), "p90_s": float(np.percentile(times, 90)), "search_rss": rss,
            "timings": index.manifest["timings"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sm70-bench-retrieval"))
    ap.add_argument("--dense-model", help="a local sentence-transformers folder: adds the hybrid (bm25 + dense, RRF)")
    ap.add_argument("--synthetic", type=int, default=1_000_000)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--queries", type=int, default=100, help="questions timed on the synthetic corpus")
    ap.add_argument("--meadow", help="comma-separated Medical Meadow file names to take as distractors (default: "
                    "all); the anchor reads the same, so the comparison stays paired, but not the issue's corpus")
    args = ap.parse_args()

    ids, texts, question_of, test = corpus(args.data, args.meadow)
    questions = [question_of[p] for p in test]
    print(f"corpus: {len(texts):,} documents ({len(question_of):,} PubMedQA-L abstracts + {len(texts) - len(question_of):,} "
          f"Medical Meadow rows); {len(questions)} PubMedQA test questions", file=sys.stderr)
    rows = {}
    ranked, info = anchor(texts, ids, questions)
    rows["BM25 anchor (bm25s, en stop words, Snowball)"] = (recall(ranked, test), len(texts) / info["build_s"],
                                                          info["query_s"])
    docs = link_docs(args.data, args.work / "docs", args.meadow)
    ranked, info = sm70_run(docs, args.work / "default.index", questions, ["bm25"], None)
    rows["sm70 default (bm25)"] = (recall(ranked, test), info["chunks"] / info["build_s"], info["p50_s"])
    if args.dense_model:
        ranked, info = sm70_run(docs, args.work / "hybrid.index", questions, ["bm25", "dense"], args.dense_model)
        rows["sm70 hybrid (bm25 + dense all-MiniLM-L6-v2, RRF)"] = (recall(ranked, test), None, info["p50_s"])
        hybrid_build = info
        ranked, _ = sm70_run(docs, args.work / "hybrid.index", questions, ["bm25", "dense"], args.dense_model,
                             retriever="dense")
        rows["sm70 dense alone (all-MiniLM-L6-v2)"] = (recall(ranked, test), None, None)
    print(f"\n{'retriever':<52} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'build chunks/s':>15} {'query p50':>10}")
    for name, (r, rate, p50) in rows.items():
        print(f"{name:<52} {r[1]:6.3f} {r[5]:6.3f} {r[10]:6.3f} {f'{rate:,.0f}' if rate else '':>15} "
              f"{f'{1000 * p50:.1f} ms' if p50 else '':>10}")
    if args.dense_model:
        t = hybrid_build["timings"]
        print(f"hybrid index build: {hybrid_build['build_s']:.0f} s this run (dense: {t.get('dense_s', 0):.0f} s; "
              "the embeddings of unchanged chunks are reused from --work)")
    anchor_r5 = rows["BM25 anchor (bm25s, en stop words, Snowball)"][0][5]
    default_r5 = rows["sm70 default (bm25)"][0][5]
    line = f"retrieval: default recall@5 {default_r5 / anchor_r5:.2f}x BM25 anchor ({default_r5:.3f} vs {anchor_r5:.3f})"
    if args.dense_model:
        hybrid_r5 = rows["sm70 hybrid (bm25 + dense all-MiniLM-L6-v2, RRF)"][0][5]
        line += f", hybrid {hybrid_r5 / anchor_r5:.2f}x ({hybrid_r5:.3f})"
    else:
        line += ", hybrid not run (no --dense-model)"
    if not args.skip_synthetic:
        s = synthetic_run(texts, questions[:args.queries], args.synthetic, args.work)
        print(f"\nsynthetic: {s['chunks']:,} chunks, sm70 index build {s['build_s']:.0f} s "
              f"({s['chunks'] / s['build_s']:,.0f} chunks/s; timings {s['timings']}), build peak RSS "
              f"{s['peak_bytes'] / 2**30:.1f} GiB; search p50 {1000 * s['p50_s']:.1f} ms, p90 {1000 * s['p90_s']:.1f} ms "
              f"over {args.queries} questions, search process peak RSS {s['search_rss'] / 2**30:.1f} GiB")
        line += (f"; {s['chunks'] / 1e6:g}M chunks p50 {1000 * s['p50_s']:.0f} ms/query, index build peak "
                 f"{s['peak_bytes'] / 2**30:.1f} GiB")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
