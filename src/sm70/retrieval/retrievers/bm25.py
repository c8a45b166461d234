"""BM25 through bm25s (Lù 2024): English stop words and Snowball stemming (PyStemmer), Lucene's
scoring with k1 = 1.5, b = 0.75 by default. The score matrix is memory-mapped when searched, so a
large index costs little memory until it is read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class BM25Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k1: float = Field(1.5, gt=0)
    b: float = Field(0.75, ge=0, le=1)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stopwords: str | None = Field("en", description="bm25s stop word list (en), or null for none")
    stemmer: str | None = Field("english", description="a Snowball stemmer of PyStemmer, or null for none")


BLOCK = 50_000  # chunks tokenized between two progress updates


def _stemmer(settings: BM25Settings):
    if not settings.stemmer:
        return None
    import Stemmer

    return Stemmer.Stemmer(settings.stemmer)


def _tokenize(texts: Sequence[str], settings: BM25Settings):
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=settings.stopwords or [], stemmer=_stemmer(settings),
                          return_ids=False, show_progress=False)


def top_k(scores: np.ndarray, k: int, positive: bool = True) -> list[tuple[int, float]]:
    """The k best (index, score), best first, ties in index order; `positive`: only scores above 0
    (a BM25 score of 0 means no word of the question is in the chunk)."""
    if k < scores.size:
        best = np.argpartition(-scores, k - 1)[:k]
    else:
        best = np.arange(scores.size)
    best = best[np.lexsort((best, -scores[best]))]
    return [(int(i), float(scores[i])) for i in best if scores[i] > 0 or not positive]


class BM25:
    def __init__(self, model, settings: BM25Settings):
        self.model, self.settings = model, settings
        self._stemmer = None

    @staticmethod
    def build(texts: Sequence[str], folder: Path, settings: BM25Settings, reuse=None, progress=None) -> dict:
        import bm25s
        from bm25s.tokenization import Tokenizer

        # Tokenized a block at a time with one vocabulary, so a long build shows its progress (and ETA).
        tokenizer = Tokenizer(stopwords=settings.stopwords or [], stemmer=_stemmer(settings))
        ids: list[list[int]] = []
        for start in range(0, len(texts), BLOCK):
            block = list(texts[start:start + BLOCK])
            ids += tokenizer.tokenize(block, update_vocab=True, return_as="ids", show_progress=False)
            if progress:
                progress(len(block))
        model = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
        model.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        model.save(str(folder))
        return {"vocabulary": len(model.vocab_dict), "chunks": len(texts)}

    @classmethod
    def load(cls, folder: Path, settings: BM25Settings) -> "BM25":
        import bm25s

        return cls(bm25s.BM25.load(str(folder), mmap=True), settings)

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        tokens = _tokenize(queries, self.settings)
        hits = []
        for query in tokens:
            ids = self.model.get_tokens_ids(query)
            if not ids:
                hits.append([])
                continue
            hits.append(top_k(self.model.get_scores_from_ids(ids), k))
        return hits
