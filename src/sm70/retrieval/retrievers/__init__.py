"""The retrievers an index can hold, by name. Each builds its files from the chunk texts into its own
folder of the index and searches them; `fusion` combines the rankings of several.

A site that outgrows the embedded ones (millions of documents, a search server) adds a module with a
class of this shape and one line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

from sm70.errors import Sm70Error
from sm70.retrieval.retrievers.bm25 import BM25, BM25Settings
from sm70.retrieval.retrievers.dense import Dense, DenseSettings

Hits = list[tuple[int, float]]   # (chunk number, score), best first


class Retriever(Protocol):
    @staticmethod
    def build(texts: Sequence[str], folder: Path, settings, reuse: "Reuse | None" = None,
              progress: Callable[[int], None] | None = None) -> dict:
        """Write the retriever's files into `folder`, calling `progress(n)` as n more texts are done;
        returns what the manifest records about them."""

    @classmethod
    def load(cls, folder: Path, settings) -> "Retriever": ...

    def search(self, queries: Sequence[str], k: int) -> list[Hits]: ...


class Reuse(Protocol):
    """What an incremental build can take from the previous index: its folder for this retriever and,
    for each new chunk, the number of the old chunk with the same text (None: a new text)."""
    folder: Path
    old_of_new: list[int | None]


RETRIEVERS: dict[str, tuple[type, type]] = {   # name -> (retriever class, settings class)
    "bm25": (BM25, BM25Settings),
    "dense": (Dense, DenseSettings),
}


def retriever_class(name: str) -> type:
    try:
        return RETRIEVERS[name][0]
    except KeyError:
        raise Sm70Error(f"unknown retriever {name!r}; known: {', '.join(RETRIEVERS)}") from None
