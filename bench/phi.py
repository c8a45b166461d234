"""The PHI scrubber on the synthetic note table: identifier recall, clinical-value retention, throughput.

    .venv/bin/python bench/phi.py            # figures, the identifiers missed and the values lost
    .venv/bin/python bench/phi.py --medqa    # also: words masked in MedQA questions (no PHI in them)

The table (tests/serve/phi_notes.py) is ~560 notes written by us: people from more than 20 cultures
with and without titles, hyphens, apostrophes, accents, lower case and names that are ordinary words,
every Safe Harbor identifier kind in US and international formats, and clinical values that must
survive. Recall counts an identifier caught when every letter and digit of it is masked; retention
counts a clinical value kept when none of it is. The last line is the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from phi_notes import notes, scores  # noqa: E402

GOALS = {"recall": 0.99, "retention": 0.98}
MEDQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medqa_usmle" / "phrases_no_exclude_test.jsonl"


def throughput(scrub, texts: list[str], seconds: float = 3.0) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for t in texts:
            scrub(t)
        done += len(texts)
    return done / (time.perf_counter() - start)


def medqa_overscrub(scrub, limit: int) -> str:
    if not MEDQA.is_file():
        return f"MedQA: skipped ({MEDQA} is absent)"
    questions = [json.loads(line)["question"] for line in MEDQA.open()][:limit]
    words = sum(len(q.split()) for q in questions)
    masked = Counter()
    for q in questions:
        for s, e, label in scrub.spans(q):
            masked[q[s:e]] += len(q[s:e].split())
    top = ", ".join(f"{w!r}" for w, _ in masked.most_common(15))
    return (f"MedQA: {sum(masked.values())} of {words} words masked ({sum(masked.values()) / words:.2%}) in "
            f"{len(questions)} questions that name no patient; most often: {top}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--medqa", type=int, nargs="?", const=500, default=0, help="also measure over-masking on "
                    "this many MedQA questions")
    ap.add_argument("--show", type=int, default=40, help="misses to list")
    args = ap.parse_args()

    from sm70.serve.guard.phi import Scrubber

    start = time.perf_counter()
    scrub = Scrubber()
    scrub("warm up")                       # the dictionaries load on first use
    load = time.perf_counter() - start
    table = notes()
    r = scores(scrub.spans, table)
    rate = throughput(scrub, [n.text for n in table])
    chars = sum(len(n.text) for n in table) / len(table)

    print(f"table: {len(table)} notes ({chars:.0f} characters on average), {r['identifiers']} identifiers, "
          f"{r['values']} clinical values; dictionaries loaded in {load:.1f} s")
    by_kind, missed_kind = Counter(), Counter(kind for kind, _, _ in r["missed"])
    for note in table:
        by_kind.update(kind for _, _, kind in note.identifiers)
    print("recall by kind: " + ", ".join(f"{k} {1 - missed_kind[k] / v:.3f} ({v})" for k, v in sorted(by_kind.items())))
    print(f"identifiers missed ({len(r['missed'])}):")
    for kind, value, text in r["missed"][:args.show]:
        print(f"  {kind:<11} {value!r:<28} in {scrub(text)[:160]!r}")
    print(f"clinical values lost ({len(r['lost'])}):")
    for value, text in r["lost"][:args.show]:
        print(f"  {value!r:<28} in {scrub(text)[:160]!r}")
    if args.medqa:
        print(medqa_overscrub(scrub, args.medqa))
    print(f"phi: identifier recall {r['recall']:.3f} (goal {GOALS['recall']}), clinical retention "
          f"{r['retention']:.3f} (goal {GOALS['retention']}), {rate:.0f} notes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
