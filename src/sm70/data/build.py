"""`sm70 data build RECIPE`: sources -> standardized, cleaned, deduplicated, decontaminated, mixed SFT set.

Rows stream through in chunks: each row is examined on its own (standardize, clean, length,
contamination, fingerprints; `verdict.py`), in forked worker processes when `workers` > 1, then
this process decides duplicates in source order so the first copy is kept. Kept rows spill to
disk, so memory holds only the dedup and decontamination indexes however large the input.
Everything is written into a temporary folder that replaces `out` only when the build has
finished: an interrupted build leaves the previous output (or nothing), never a half-written dataset.

Outputs: train.jsonl and val.jsonl ({id, source, prompt, completion} a line), rejects.jsonl
({source, line, record, reason, detail, row}), datacard.json/.md, lengths.png, manifest.json.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from array import array
from pathlib import Path
from typing import Iterator

import numpy as np

from sm70.atomic import atomic_dir
from sm70.data import mix
from sm70.data.config import DataConfig, DecontamConfig, DedupConfig, SourceConfig  # noqa: F401 (recipe types)
from sm70.data.datacard import (
    SourceStats,
    check_counts,
    length_summary,
    markdown,
    plot_lengths,
    sha256_tree,
    totals,
)
from sm70.data.decontam import Decontaminator
from sm70.data.dedup import Deduplicator
from sm70.data.parallel import default_workers, ordered_map
from sm70.data.sources import RawRow, Source
from sm70.data.standardize import item_record
from sm70.data.verdict import Examiner, Verdict
from sm70.digest import sha256_file
from sm70.errors import Sm70Error

CHUNK_ROWS = 1000  # rows per task sent to a worker: large enough to amortise the hand-over
_SURROGATE = re.compile("[\ud800-\udfff]")
OUTPUTS = ("train.jsonl", "val.jsonl", "rejects.jsonl", "datacard.json", "datacard.md", "lengths.png")


class _Spill:
    """A source's kept rows on disk, with each row's record number and token length in memory."""

    def __init__(self, path: Path):
        self.path = path
        self.records = array("Q")
        self.lengths = array("I")


def build(cfg: DataConfig) -> Path:
    started = time.perf_counter()
    out = Path(cfg.out)
    _check_out(out)
    print(f"sm70 data build -> {out}\n{cfg.to_yaml()}", flush=True)
    sources = [Source(s) for s in cfg.sources]  # every path and hub id is checked before any work
    decontaminator = Decontaminator.from_configs(cfg.decontaminate)
    examiner = Examiner(cfg, decontaminator)
    dedup = Deduplicator(cfg.dedup, cfg.seed)
    stats = [SourceStats(s.cfg.name, s.location, s.cfg.format, s.cfg.weight, s.licence) for s in sources]
    with atomic_dir(out) as tmp:
        spills = []
        with open(tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects:
            for i, (source, st) in enumerate(zip(sources, stats)):
                spills.append(_filter_source(cfg, source, st, examiner, dedup, rejects, tmp / f".kept-{i}.jsonl"))
                st.sha256 = {f: d for p in source.files() for f, d in sha256_tree(p).items()}
                print(f"  {st.name}: read {st.read:,}, kept {st.kept:,}, removed {dict(st.removed) or 0}", flush=True)
        lengths = _write_splits(cfg, stats, spills, tmp)
        for spill in spills:
            spill.path.unlink()
        card = _datacard(cfg, stats, decontaminator, lengths, tmp, examiner.tokens.tokenizer is None)
        _write_manifest(cfg, stats, decontaminator, card["outputs"], tmp)
    t = card["totals"]
    elapsed = time.perf_counter() - started
    print(f"read {t['read']:,} rows, kept {t['kept']:,}, wrote {t['train']:,} train + {t['val']:,} val "
          f"({t['read'] / max(elapsed, 1e-9):,.0f} rows/s) -> {out}", flush=True)
    return out


def _check_out(out: Path) -> None:
    # atomic_dir replaces `out` wholesale; never let a typo in out= replace an unrelated folder.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise Sm70Error(f"out: {out} exists and is not the output of an earlier data build (no manifest.json); "
                        "choose a new folder")


def _filter_source(cfg: DataConfig, source: Source, st: SourceStats, examiner: Examiner, dedup: Deduplicator,
                   rejects, path: Path) -> _Spill:
    """Examine rows in parallel, then decide duplicates in source order (the first copy is kept)."""
    spill = _Spill(path)
    name = source.cfg.name
    chunks = ((chunk, source.cfg) for chunk in _chunks(source.rows(), CHUNK_ROWS))
    workers = cfg.workers or default_workers()
    with open(path, "w", encoding="utf-8") as kept:
        for (chunk, _), verdicts in ordered_map(examiner.examine_chunk, chunks, workers):
            for raw, v in zip(chunk, verdicts):
                st.read += 1
                reason = _decide(cfg, raw, v, dedup)
                if reason:
                    st.removed[reason] += 1
                    row = item_record(raw.value) if hasattr(raw.value, "excluded") else raw.value
                    rejects.write(_json_line({"source": name, "line": raw.line, "record": raw.record, "reason": reason,
                                              "detail": v.detail if reason == v.reason else None, "row": row}))
                    continue
                st.kept += 1
                kept.write(v.line)
                spill.records.append(raw.record)
                spill.lengths.append(v.tokens)
    return spill


def _decide(cfg: DataConfig, raw: RawRow, v: Verdict, dedup: Deduplicator) -> str | None:
    """The reason a row is removed, in a fixed order: what it is, then whether it came before."""
    if v.reason == "malformed" and cfg.on_error == "fail":
        raise Sm70Error(f"{raw.where}: {v.detail} (on_error=skip sends such rows to rejects.jsonl instead)")
    if v.reason and not v.reason.startswith("contaminated:"):
        return v.reason
    if dedup.exact_duplicate(v.key):
        return "duplicate"
    if v.reason:
        return v.reason
    if dedup.near_duplicate(v.sketch):
        return "near_duplicate"
    return None


def _json_line(obj: dict) -> str:
    line = json.dumps(obj, ensure_ascii=False, default=str) + "\n"
    if not line.isascii() and _SURROGATE.search(line):
        # A rejected row may hold half a UTF-16 pair (a JSON "\\udcff"), which UTF-8 cannot write: escape it.
        return json.dumps(obj, default=str) + "\n"
    return line


def _chunks(rows: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _write_splits(cfg: DataConfig, stats: list[SourceStats], spills: list[_Spill], tmp: Path) -> np.ndarray:
    quota = mix.quotas({s.name: s.kept for s in stats}, {s.name: s.weight for s in stats}, cfg.target_rows)
    lengths = array("I")
    with open(tmp / "train.jsonl", "w", encoding="utf-8") as train, open(tmp / "val.jsonl", "w", encoding="utf-8") as val:
        for st, spill in zip(stats, spills):
            copies = mix.copies(st.kept, quota[st.name], cfg.seed, st.name)
            st.mixed_out = int((copies == 0).sum())
            st.repeated = int(copies.sum()) - (st.kept - st.mixed_out)
            with open(spill.path, encoding="utf-8") as f:
                for j, line in enumerate(f):
                    c = int(copies[j])
                    if not c:
                        continue
                    row_id = f"{st.name}-{spill.records[j]}"
                    to_val = mix.is_validation(row_id, cfg.seed, cfg.val_fraction)
                    target = val if to_val else train
                    for r in range(c):
                        # Repeats get their own id; the id is the first key of the line as written above.
                        target.write(line if r == 0 else line.replace(f'"{row_id}"', f'"{row_id}~{r}"', 1))
                        lengths.append(spill.lengths[j])
                    if to_val:
                        st.val += c
                    else:
                        st.train += c
    return np.frombuffer(lengths, dtype=np.uint32) if len(lengths) else np.zeros(0, dtype=np.uint32)


def _datacard(cfg: DataConfig, stats, decontaminator: Decontaminator, lengths: np.ndarray, tmp: Path,
              estimated: bool) -> dict:
    from sm70 import __version__

    plot_lengths(lengths, cfg.max_tokens, estimated, tmp / "lengths.png")
    card = {
        "out": str(cfg.out), "sm70_version": __version__, "template": cfg.template, "seed": cfg.seed,
        "token_count": "estimated at 3 characters per token" if estimated else f"tokenizer {cfg.tokenizer}",
        "recipe": cfg.dump(),
        "sources": [s.card() for s in stats],
        "totals": totals(stats),
        "decontamination": [vars(b) for b in decontaminator.benchmarks],
        "token_lengths": length_summary(lengths, cfg.max_tokens),
        "outputs": {name: sha256_file(tmp / name) for name in ("train.jsonl", "val.jsonl", "rejects.jsonl", "lengths.png")},
    }
    check_counts(card)
    (tmp / "datacard.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "datacard.md").write_text(markdown(card), encoding="utf-8")
    return card


def _write_manifest(cfg: DataConfig, stats, decontaminator: Decontaminator, hashed: dict[str, str], tmp: Path) -> None:
    from sm70 import __version__

    inputs = {f: d for s in stats for f, d in s.sha256.items()}
    for b in decontaminator.benchmarks:
        inputs.update(b.sha256)
    manifest = {"status": "complete", "command": "data build", "sm70_version": __version__, "config": cfg.dump(),
                "inputs": inputs,
                "outputs": {name: hashed.get(name) or sha256_file(tmp / name) for name in OUTPUTS}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
