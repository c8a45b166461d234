"""`sm70 index build docs=DIR out=INDEX`: read every file under DIR, chunk it, build the retrievers.

    sm70 index build docs=guidelines/ out=guidelines.index
    sm70 index build recipes/index/pubmedqa-meadow.yaml retrievers=[bm25,dense] dense.model=DIR

The index folder holds `manifest.json` (every file with its sha256 and status, the chunking and
retriever settings, library versions, a fingerprint), `config.yaml`, the chunks and one folder per
retriever. It is written beside its final place and renamed onto it, so a killed build leaves the
old index whole. Building again re-reads only files whose size, time or hash changed, and embeds
only chunks whose text is new. A file that cannot be read is listed with its reason; `strict=true`
makes any such file an error and writes nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from stat import S_ISREG

from pydantic import Field

from sm70.atomic import atomic_dir, write_json, write_text
from sm70.config import Config
from sm70.digest import sha256_file
from sm70.errors import Sm70Error
from sm70.retrieval.chunking import ChunkSettings, chunk_document
from sm70.retrieval.documents import Unreadable, read_document, reader_for
from sm70.retrieval.retrievers import RETRIEVERS, retriever_class
from sm70.retrieval.retrievers.bm25 import BM25Settings
from sm70.retrieval.retrievers.dense import DenseSettings
from sm70.retrieval.store import ChunkStore, write_chunks
from sm70.versions import versions

LIBRARIES = ("bm25s", "PyStemmer", "pypdf", "numpy", "sentence-transformers", "torch", "transformers")
MANIFEST = "manifest.json"


class IndexConfig(Config):
    docs: Path = Field(description="folder of documents: .txt .md .html .pdf .jsonl {id,title,text} .json")
    out: Path = Field(description="index folder (replaced atomically)")
    include: list[str] = Field(default_factory=list, description="glob patterns of paths under docs to index "
                               "(e.g. ['pubmedqa/ori_pqal.json', 'medical_meadow/*.json']); default: every file")
    chunk: ChunkSettings = ChunkSettings()
    retrievers: list[str] = Field(["bm25"], description="bm25, dense, or both (searched fused by RRF)")
    bm25: BM25Settings = BM25Settings()
    dense: DenseSettings = DenseSettings()
    strict: bool = Field(False, description="a file that cannot be read is an error (nothing is written)")
    progress: bool = True

    def retriever_settings(self) -> dict:
        return {name: getattr(self, name).model_dump(mode="json") for name in self.retrievers}


class _Reuse:
    def __init__(self, folder: Path, old_of_new: list[int | None]):
        self.folder, self.old_of_new = folder, old_of_new


def walk(docs: Path, out: Path, include: list[str] = ()) -> tuple[list[Path], int]:
    """Every file under `docs` in path order (links followed) that matches an `include` pattern (when
    given), and how many hidden names were passed over; the index folder is left out when it lies inside
    `docs`."""
    files, hidden, out = [], 0, out.resolve()
    for root, dirs, names in os.walk(docs, followlinks=True):
        here = Path(root)
        hidden += sum(1 for n in dirs + names if n.startswith("."))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != out)
        files += [here / n for n in sorted(names) if not n.startswith(".")]
    if include:
        files = [f for f in files if any(fnmatch.fnmatch(f.relative_to(docs).as_posix(), p) for p in include)]
    return files, hidden


def read_old(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("status") == "complete" else None


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=True)


def reading_code() -> str:
    """A hash of the code that turns files into chunks: chunks of an older reader are not reused."""
    from sm70.retrieval import chunking, documents, records

    h = hashlib.sha256()
    for module in (documents, records, chunking):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def chunking_settings(cfg: IndexConfig) -> dict:
    return {**cfg.chunk.model_dump(mode="json"), "reader": reading_code()}


def collect(cfg: IndexConfig, old: dict | None, progress) -> tuple[list[dict], list[dict]]:
    """(file entries, chunks) for every file under docs; an unchanged file's chunks come from the old index."""
    files, hidden = walk(cfg.docs, cfg.out, cfg.include)
    if not files:
        raise Sm70Error(f"docs: {cfg.docs}: no files" + (f" match include {cfg.include}" if cfg.include else ""))
    same_chunking = old is not None and old["settings"]["chunk"] == chunking_settings(cfg)
    before = {f["path"]: f for f in old["files"]} if same_chunking else {}
    store = ChunkStore(cfg.out) if same_chunking else None
    stats = {p: _stat(p) for p in files}
    task = progress.add_task("reading", total=sum(s.st_size for s in stats.values() if s) or 1)
    entries, chunks = [], []
    for path in files:
        rel = path.relative_to(cfg.docs).as_posix()
        stat, prev = stats[path], before.get(rel)
        entry = {"path": rel, "size": stat.st_size if stat else None, "mtime_ns": stat.st_mtime_ns if stat else None}
        problem = _unreadable(path, stat)
        if problem is None and prev and (prev["size"], prev["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            entry["sha256"] = prev["sha256"]
        elif problem is None:
            try:
                entry["sha256"] = sha256_file(path)
            except OSError as e:
                problem = f"cannot read: {e.strerror or e}"
        if problem is not None:
            entry.update(sha256=None, status="failed", reason=problem, chunks=0, read=True, first_chunk=len(chunks))
            entries.append(entry)
            continue
        if prev and prev["sha256"] == entry["sha256"]:
            entry.update({k: prev[k] for k in ("status", "reason", "chunks", "empty_records") if k in prev},
                         read=False)
            got = store.range(prev["first_chunk"], prev["chunks"]) if prev["chunks"] else []
        else:
            entry["read"] = True
            got = []
            try:
                doc = read_document(path)
                got = [c.to_dict() for c in chunk_document(doc, rel, cfg.chunk)]
                entry.update(status="indexed", chunks=len(got), empty_records=doc.empty_records)
            except Unreadable as e:
                status = "unsupported" if reader_for(path) is None else "failed"
                entry.update(status=status, reason=str(e), chunks=0)
        entry["first_chunk"] = len(chunks)
        chunks += got
        entries.append(entry)
        progress.advance(task, stat.st_size)
    progress.remove_task(task)
    if hidden:
        print(f"index: {hidden} hidden file(s) or folder(s) (names starting with '.') not read", file=sys.stderr)
    return entries, chunks


def same_text(old_folder: Path, texts: list[str]) -> list[int | None]:
    """For each text, the number of an old chunk with the same indexed text (None: new text), so a
    retriever reuses what it computed for it (a moved or re-read file embeds nothing again)."""
    digest = lambda text: hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()  # noqa: E731
    old = {digest(_indexed_text(c)): i for i, c in enumerate(ChunkStore(old_folder))}
    return [old.get(digest(t)) for t in texts]


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _unreadable(path: Path, stat: os.stat_result | None) -> str | None:
    if stat is None:
        return "cannot read: a broken link or a file removed during the build" if path.is_symlink() or \
            not path.exists() else "cannot read: permission denied"
    if not S_ISREG(stat.st_mode):
        return "not a regular file (a FIFO, socket or device)"
    return None


def fingerprint(settings: dict, entries: list[dict]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for e in entries:
        h.update(f"{e['path']}\0{e['sha256']}\0{e['status']}\n".encode())
    return h.hexdigest()


def build_index(cfg: IndexConfig) -> Path:
    if not cfg.docs.is_dir():
        raise Sm70Error(f"docs: {cfg.docs}: not a folder")
    for name in cfg.retrievers:
        retriever_class(name)
    if not cfg.retrievers:
        raise Sm70Error("retrievers: give at least one of " + ", ".join(RETRIEVERS))
    print(cfg.to_yaml(), file=sys.stderr)
    started = time.perf_counter()
    old = read_old(cfg.out)
    settings = {"chunk": chunking_settings(cfg), "retrievers": cfg.retriever_settings()}
    with _progress(cfg.progress) as progress:
        entries, chunks = collect(cfg, old, progress)
        bad = [e for e in entries if e["status"] != "indexed"]
        if cfg.strict and bad:
            raise Sm70Error(f"strict: {len(bad)} file(s) could not be indexed, nothing written; first: "
                            f"{cfg.docs / bad[0]['path']}: {bad[0]['reason']}")
        if not chunks:
            raise Sm70Error(f"{cfg.docs}: no text to index in {len(entries)} file(s)"
                            + (f"; first problem: {bad[0]['path']}: {bad[0]['reason']}" if bad else ""))
        read_s = time.perf_counter() - started
        with atomic_dir(cfg.out) as tmp:
            write_chunks(tmp, chunks)
            texts = [_indexed_text(c) for c in chunks]
            built, timings = {}, {"read_s": round(read_s, 3)}
            for name in cfg.retrievers:
                reuse = None
                if old and old["settings"]["retrievers"].get(name) == settings["retrievers"][name]:
                    reuse = _Reuse(cfg.out / name, same_text(cfg.out, texts))
                task = progress.add_task(name, total=len(texts))
                t0 = time.perf_counter()
                built[name] = retriever_class(name).build(texts, tmp / name, getattr(cfg, name), reuse=reuse,
                                                          progress=lambda n, t=task: progress.advance(t, n))
                timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)
                progress.remove_task(task)
            manifest = {
                "stage": "index", "status": "complete",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "docs": str(cfg.docs.resolve()), "settings": settings, "retrievers": built,
                "fingerprint": fingerprint(settings, entries),
                "counts": _counts(entries, len(chunks)), "timings": timings,
                "versions": versions(LIBRARIES, python=True, missing=False), "files": entries,
            }
            write_text(tmp / "config.yaml", cfg.to_yaml())
            write_json(tmp / MANIFEST, manifest)
    _report(cfg, manifest, time.perf_counter() - started)
    return cfg.out


def _indexed_text(chunk: dict) -> str:
    """What the retrievers read: the title, then the chunk (a question may name a guideline by title)."""
    title = chunk["title"]
    return f"{title}\n{chunk['text']}" if title and not chunk["text"].startswith(title) else chunk["text"]


def _counts(entries: list[dict], n_chunks: int) -> dict:
    counts = {"files": len(entries), "chunks": n_chunks,
              "read": sum(e["read"] for e in entries), "reused": sum(not e["read"] for e in entries)}
    for status in ("indexed", "failed", "unsupported"):
        counts[status] = sum(e["status"] == status for e in entries)
    return counts


def _report(cfg: IndexConfig, manifest: dict, seconds: float) -> None:
    c = manifest["counts"]
    print(f"index: {c['files']} files ({c['indexed']} indexed, {c['failed']} failed, {c['unsupported']} "
          f"unsupported; {c['read']} read, {c['reused']} unchanged), {c['chunks']} chunks, "
          f"{', '.join(cfg.retrievers)} in {seconds:.1f} s -> {cfg.out}", file=sys.stderr)
    for e in manifest["files"]:
        if e["status"] != "indexed":
            print(f"  {e['status']}: {e['path']}: {e['reason']}", file=sys.stderr)
