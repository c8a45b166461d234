"""`sm70 serve rag=INDEX rag_min_score=X`: where X should sit, measured on an index and two sets of questions.

A question whose best BM25 score in the index is under `rag_min_score` gets "no source matches" instead of
an answer from the model's memory. This script scores each question as the server does (the best BM25
score over the whole index, `Grounding.sources`), then reports for each threshold the share of answerable
questions kept and of off-topic ones refused, the threshold that maximizes both (Youden's J), and how the
default does.

    sm70 index build recipes/index/pubmedqa-meadow.yaml
    python bench/rag_threshold.py --index indexes/pubmedqa-meadow --data ../shared/data

Answerable: the 500 PubMedQA test questions (their own abstract is in that index), or `--answerable FILE`.
Off-topic: bench/questions/off_topic.txt (80 non-medical questions written for this), or `--off-topic FILE`;
bench/questions/fictional_medical.txt (drugs and diseases that do not exist) is reported apart.

BM25 scores depend on the corpus (its size and words) and on the questions' length, so a site re-measures
on its own index: `--answerable` its clinicians' questions that its documents answer, `--off-topic` ones
they do not, each a file of one question a line or JSON Lines {id, question}. The last line is the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0, 2, 4, 5, 6, 7, 7.5, 8, 9, 10, 12, 15)


def questions(path: Path) -> list[str]:
    from sm70.retrieval.search import read_queries

    return [q for _, q in read_queries(path) if not q.startswith("#")]


def pubmedqa_questions(data: Path) -> list[str]:
    pqal = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    test = json.loads((data / "pubmedqa" / "test_ground_truth.json").read_text())
    return [pqal[pmid]["QUESTION"] for pmid in test]


def best_scores(grounding, qs: list[str]) -> np.ndarray:
    return np.array([grounding.sources(q)[1] for q in qs])


def youden(kept: np.ndarray, refused: np.ndarray) -> tuple[float, float]:
    """(threshold, J): the threshold among the scores seen that maximizes kept + refused - 1, lowest on a tie."""
    best = (0.0, -1.0)
    for t in np.unique(np.concatenate([kept, refused])):
        j = (kept >= t).mean() + (refused < t).mean() - 1
        if j > best[1] + 1e-12:
            best = (float(t), float(j))
    return best


def main() -> int:
    from sm70.serve.api.grounding import MIN_SCORE, Grounding

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True, help="an `sm70 index build` folder with a bm25 retriever")
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data",
                    help="the shared datasets (PubMedQA's questions, unless --answerable)")
    ap.add_argument("--answerable", type=Path, help="questions the index answers")
    ap.add_argument("--off-topic", type=Path, default=HERE / "questions" / "off_topic.txt")
    ap.add_argument("--fictional", type=Path, default=HERE / "questions" / "fictional_medical.txt")
    ap.add_argument("--default", type=float, default=MIN_SCORE, help="the threshold to report (default: sm70's)")
    args = ap.parse_args()

    grounding = Grounding(args.index, k=1, min_score=0, retriever="bm25")
    answerable = questions(args.answerable) if args.answerable else pubmedqa_questions(args.data)
    sets = {"answerable": best_scores(grounding, answerable),
            "off-topic": best_scores(grounding, questions(args.off_topic))}
    if args.fictional and args.fictional.is_file():
        sets["fictional"] = best_scores(grounding, questions(args.fictional))
    print(f"index {args.index} (fingerprint {grounding.fingerprint[:12]}, {len(grounding.index.store):,} chunks); "
          f"best BM25 score of each question")
    print(f"{'set':<12} {'n':>5} " + " ".join(f"{f'p{p}':>6}" for p in (5, 10, 25, 50, 75, 90, 95)))
    for name, s in sets.items():
        print(f"{name:<12} {len(s):>5} " + " ".join(f"{v:6.2f}" for v in np.percentile(s, [5, 10, 25, 50, 75, 90, 95])))
    print(f"\n{'threshold':>9} {'answerable kept':>16} " + " ".join(f"{n + ' refused':>18}" for n in sets if n != "answerable"))
    for t in sorted({*THRESHOLDS, args.default}):
        print(f"{t:>9g} {(sets['answerable'] >= t).mean():>16.3f} "
              + " ".join(f"{(s < t).mean():>18.3f}" for n, s in sets.items() if n != "answerable"))
    t_best, j = youden(sets["answerable"], sets["off-topic"])
    print(f"\nbest on this data (Youden's J, answerable vs off-topic): {t_best:.2f} (J {j:.3f}: answerable kept "
          f"{(sets['answerable'] >= t_best).mean():.3f}, off-topic refused {(sets['off-topic'] < t_best).mean():.3f})")
    kept, refused = (sets["answerable"] >= args.default).mean(), (sets["off-topic"] < args.default).mean()
    extra = f", fictional-medical refused {(sets['fictional'] < args.default).mean():.2f}" if "fictional" in sets else ""
    print(f"rag_threshold: default {args.default:g}: answerable kept {kept:.2f}, off-topic refused {refused:.2f}"
          f"{extra} (best on this data {t_best:.2f}, J {j:.2f}; n={len(sets['answerable'])}/{len(sets['off-topic'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
