"""`sm70 index search INDEX "question" k=10`: the chunks that best answer a question.

    sm70 index search guidelines.index "first-line treatment of sepsis" k=5
    sm70 index search guidelines.index "..." format=json
    sm70 index search guidelines.index queries=questions.jsonl out=hits.jsonl   # {id, question} or lines

Each hit carries its document (path relative to the indexed folder), title, location (page, record,
section), character offsets and score. With several retrievers built the default is their reciprocal
rank fusion (`retriever=rrf`); `retriever=bm25` or `dense` searches one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field

from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.retrieval.index import MANIFEST, read_old
from sm70.retrieval.retrievers import RETRIEVERS, retriever_class
from sm70.retrieval.retrievers.fusion import RRF_K, rrf
from sm70.retrieval.store import ChunkStore

FUSION_DEPTH = 100  # candidates each retriever hands to the fusion


class SearchConfig(Config):
    index: Path
    query: str | None = None
    queries: Path | None = Field(None, description="a file of questions: one a line, or JSONL {id, question}")
    k: int = Field(10, ge=1)
    retriever: str = Field("auto", description="auto (rrf when several are built), bm25, dense or rrf")
    format: Literal["text", "json"] = "text"
    out: Path | None = Field(None, description="queries=: the JSON Lines output (default: standard output)")
    rrf_k: int = Field(RRF_K, ge=1)


class Index:
    """An index folder opened for searching; retrievers are loaded on first use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = read_old(self.folder)
        if manifest is None:
            raise Sm70Error(f"{self.folder}: not a finished index (no complete {MANIFEST}); build it with "
                            "`sm70 index build docs=DIR out=INDEX`")
        self.manifest = manifest
        self.store = ChunkStore(self.folder)
        self._loaded: dict = {}

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def built(self) -> list[str]:
        return list(self.manifest["settings"]["retrievers"])

    def retriever(self, name: str):
        if name not in self._loaded:
            if name not in self.built:
                raise Sm70Error(f"retriever {name!r} is not in {self.folder} (built: {', '.join(self.built)})")
            settings_cls = RETRIEVERS[name][1]
            settings = settings_cls.model_validate(self.manifest["settings"]["retrievers"][name])
            self._loaded[name] = retriever_class(name).load(self.folder / name, settings)
        return self._loaded[name]

    def resolve(self, name: str) -> str:
        if name == "auto":
            return "rrf" if len(self.built) > 1 else self.built[0]
        if name != "rrf" and name not in RETRIEVERS:
            raise Sm70Error(f"retriever: unknown {name!r}; use auto, rrf or one of {', '.join(self.built)}")
        return name

    def rank(self, queries: Sequence[str], k: int, retriever: str = "auto", rrf_k: int = RRF_K
             ) -> list[list[tuple[int, float]]]:
        """(chunk number, score) of the k best chunks of each query."""
        name = self.resolve(retriever)
        if name != "rrf":
            return self.retriever(name).search(queries, k)
        per = [self.retriever(n).search(queries, max(k, FUSION_DEPTH)) for n in self.built]
        return [rrf([p[q] for p in per], k, rrf_k) for q in range(len(queries))]

    def search(self, queries: Sequence[str], k: int, retriever: str = "auto", rrf_k: int = RRF_K) -> list[list[dict]]:
        """The k best chunks of each query as dicts: rank, score, chunk, document, title, location, ..., text."""
        ranked = self.rank(queries, k, retriever, rrf_k)
        out = []
        for hits in ranked:
            chunks = self.store.get(n for n, _ in hits)
            out.append([{"rank": r, "score": round(s, 6), "chunk": n, **c}
                        for r, ((n, s), c) in enumerate(zip(hits, chunks), start=1)])
        return out


def read_queries(path: Path) -> list[tuple[str, str]]:
    """(id, question) of a queries file: JSON Lines {id, question}, or one question a line."""
    from sm70 import textfile
    from sm70.jsonl import read_jsonl

    if path.suffix == ".jsonl":
        out = []
        for number, row in read_jsonl(path):
            question = row.get("question")
            if not isinstance(question, str) or not question.strip():
                raise Sm70Error(f"{path}:{number}: question: missing or not text")
            out.append((str(row.get("id", number)), question))
        return out
    out = []
    for number, text, error in textfile.lines(path):
        if error:
            raise Sm70Error(f"{path}:{number}: {error}")
        if text.strip():
            out.append((str(number), text.strip()))
    return out


def _text(question: str, hits: list[dict]) -> str:
    lines = [f"{question}"]
    if not hits:
        lines.append("  (nothing found)")
    for h in hits:
        where = ", ".join(p for p in (h["location"],) if p)
        lines.append(f"[{h['rank']}] {h['score']:.4g}  {h['document']}" + (f" ({where})" if where else "")
                     + (f" — {h['title']}" if h["title"] else ""))
        snippet = " ".join(h["text"].split())
        lines.append("    " + (snippet[:300] + "…" if len(snippet) > 300 else snippet))
    return "\n".join(lines)


def search(cfg: SearchConfig) -> int:
    if (cfg.query is None) == (cfg.queries is None):
        raise Sm70Error('index search: give a question (sm70 index search INDEX "question") or queries=FILE')
    index = Index(cfg.index)
    if cfg.query is not None:
        hits = index.search([cfg.query], cfg.k, cfg.retriever, cfg.rrf_k)[0]
        if cfg.format == "json":
            print(json.dumps({"question": cfg.query, "index": index.fingerprint, "results": hits},
                             ensure_ascii=False, indent=2))
        else:
            print(_text(cfg.query, hits))
        return 0
    queries = read_queries(cfg.queries)
    results = index.search([q for _, q in queries], cfg.k, cfg.retriever, cfg.rrf_k)
    lines = "".join(json.dumps({"id": qid, "question": q, "results": hits}, ensure_ascii=False) + "\n"
                    for (qid, q), hits in zip(queries, results))
    if cfg.out is None:
        sys.stdout.write(lines)
    else:
        from sm70.atomic import write_text

        write_text(cfg.out, lines)
        print(f"index search: {len(queries)} questions -> {cfg.out}", file=sys.stderr)
    return 0
