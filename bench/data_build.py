"""Benchmark `sm70 data build`: rows/s and peak memory with deduplication and decontamination on.

Input: the four Medical Meadow files in ../shared/data/medical_meadow (20,851 rows), replicated to
at least 200,000 rows. Copy 0 is the real data. In every later copy each 5th word of every field is
replaced by a copy-specific token, so that each 5-word shingle differs from all other copies and
the copies are neither exact nor near duplicates (otherwise dedup would throw away 90% of the input
after a cheap check and the benchmark would measure little); 2% of the later rows are left unperturbed
(exact duplicates) and 100 MedQA test questions are planted (contamination), so both filters do real
work. Decontamination indexes the real MedQA, PubMedQA and USMLE test files.

    .venv/bin/python bench/data_build.py [--rows 200000] [--workers 0] [--shared ../shared/data]

The figure is noisy on a shared machine; it ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = ["medical_meadow_small.json", "medical_meadow_health_advice.json", "medical_meadow_mmmlu.json",
           "medical_meadow_pubmed_causal.json"]


def perturb(text: str, copy: int) -> str:
    words = text.split(" ")
    for i in range(4, len(words), 5):
        words[i] = f"v{copy}x{i % 89}"
    return " ".join(words)


def replicate(shared: Path, folder: Path, rows: int) -> list[Path]:
    rng = random.Random(0)
    bases = {name: json.loads((shared / "medical_meadow" / name).read_text()) for name in SUBSETS}
    total = sum(len(b) for b in bases.values())
    copies = -(-rows // total)
    medqa = [json.loads(line) for line in (shared / "medqa_usmle" / "phrases_no_exclude_test.jsonl").open()]
    planted = rng.sample(medqa, 100)
    paths = []
    for name, base in bases.items():
        path = folder / name
        with open(path, "w", encoding="utf-8") as f:
            f.write("[\n")
            first = True
            for copy in range(copies):
                for row in base:
                    if copy and rng.random() >= 0.02:
                        row = {k: perturb(v, copy) for k, v in row.items()}
                    f.write(("" if first else ",\n") + json.dumps(row))
                    first = False
            if name == SUBSETS[0]:
                for q in planted:  # re-cased, as a scraped copy would be
                    f.write(",\n" + json.dumps({"instruction": "Answer this question truthfully",
                                                "input": q["question"].lower(), "output": q["answer"]}))
            f.write("\n]\n")
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=0, help="0: the default (one process)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not (args.shared / "medical_meadow").is_dir():
        sys.exit(f"{args.shared}: the real dataset copies are needed for this benchmark")

    from sm70.config import load_config
    from sm70.data.build import DataConfig, build
    from sm70.data.parallel import default_workers

    with tempfile.TemporaryDirectory(prefix="sm70-bench-data-") as tmp:
        tmp = Path(tmp)
        paths = replicate(args.shared, tmp, args.rows)
        cfg = load_config(DataConfig, None, [], **{
            "out": str(tmp / "out"), "template": "alpaca", "val_fraction": 0.05, "workers": args.workers,
            "sources": [{"name": p.stem, "path": str(p)} for p in paths],
            "decontaminate": [
                {"task": "medqa", "path": str(args.shared / "medqa_usmle" / "phrases_no_exclude_test.jsonl")},
                {"task": "pubmedqa", "path": str(args.shared / "pubmedqa")},
                {"task": "usmle", "path": str(args.shared / "usmle_self_assessment")}]})
        load_start = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        out = build(cfg)
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        load_end = os.getloadavg()[0]
        card = json.loads((out / "datacard.json").read_text())
    t = card["totals"]
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(f"removed: {t['removed']}")
    # Rows per CPU-second (this process and its workers) is the figure to compare across runs: the
    # wall-clock rate depends on what else the shared cores are doing, which the load average shows.
    print(f"data build, {cfg.workers or default_workers()} worker(s), {len(os.sched_getaffinity(0))} cores: "
          f"{t['read']:,} rows in {elapsed:.1f} s wall = {t['read'] / elapsed:,.0f} rows/s, "
          f"{t['read'] / cpu:,.0f} rows per CPU-second, peak RSS {peak_mb:,.0f} MB, "
          f"load average {load_start:.1f} at start / {load_end:.1f} at end "
          f"(dedup + decontamination on; goal >= 20,000 rows/s and < 2,048 MB)")


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
