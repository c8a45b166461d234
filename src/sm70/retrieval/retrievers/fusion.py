"""Reciprocal rank fusion (Cormack et al. 2009), as MedRAG fuses BM25 and dense retrievers: a chunk
scores the sum of 1 / (k + rank) over the rankings it appears in (rank 1 is the best)."""

from __future__ import annotations

from typing import Sequence

RRF_K = 60


def rrf(rankings: Sequence[Sequence[tuple[int, float]]], top: int, k: int = RRF_K) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk, _) in enumerate(ranking, start=1):
            scores[chunk] = scores.get(chunk, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
