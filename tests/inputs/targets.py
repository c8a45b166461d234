"""Fuzz targets: every kind of file sm70 reads, fed raw bytes.

Each target writes the bytes where its reader expects a file and runs the reader the way the
command does, through to the outputs it writes (a kept row as its train.jsonl line, a reject as
its rejects.jsonl line, a recipe as the YAML printed at start). The contract every target checks:
the reader returns, or raises sm70's own error (`Sm70Error`) naming the file; any other exception
is a crash.

Driven two ways: `test_fuzz.py` runs each target on a bounded, seeded set of hypothesis examples
(part of the test suite); run as a script, this file runs a coverage-guided atheris campaign per
target (`python tests/inputs/targets.py --seconds N`, what `bench/fuzz.py` calls).

sm70 is imported inside the targets, not at the top, so that atheris can instrument it first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "sm70" / "samples"
SPLIT = b"\n=====\n"  # a target that reads two files takes them as `first SPLIT second`


class Target(NamedTuple):
    name: str
    run: Callable[[bytes, Path], Path]  # (data, an empty scratch folder) -> the path an error must name
    seeds: list[bytes]                  # valid inputs the mutations start from


class ContractBroken(AssertionError):
    """An Sm70Error that does not name the file it is about."""


def check(target: Target, data: bytes, folder: Path) -> None:
    """Run `target` on `data`; only a clean result or an Sm70Error naming the file may come out."""
    from sm70.errors import Sm70Error

    try:
        target.run(data, folder)
    except Sm70Error as e:
        named = str(folder)
        if named not in str(e) and not target.name.startswith("override"):
            raise ContractBroken(f"{target.name}: the error does not name {named}: {e}") from e


# ---- data sources ----

def _data_config(folder: Path, source: dict):
    from sm70.config import load_config
    from sm70.data.config import DataConfig

    return load_config(DataConfig, None, [], out=str(folder / "out"), sources=[source], workers=1)


def examine_rows(rows, cfg) -> None:
    from sm70.data.build import _json_line
    from sm70.data.decontam import Decontaminator
    from sm70.data.standardize import item_record
    from sm70.data.verdict import Examiner

    examiner = Examiner(cfg, Decontaminator())
    source = cfg.sources[0]
    for raw in rows:
        v = examiner.examine(raw, source)
        if v.reason:
            row = item_record(raw.value) if hasattr(raw.value, "excluded") else raw.value
            _json_line({"source": source.name, "line": raw.line, "record": raw.record, "reason": v.reason,
                        "detail": v.detail, "row": row}).encode("utf-8")
        else:
            v.line.encode("utf-8")  # train.jsonl is UTF-8: a string that cannot be written is a crash


def _table(suffix: str) -> Callable[[bytes, Path], Path]:
    def run(data: bytes, folder: Path) -> Path:
        from sm70.data.sources import read_table

        path = folder / f"rows{suffix}"
        path.write_bytes(data)
        examine_rows(read_table(path), _data_config(folder, {"name": "s", "path": str(path)}))
        return path
    return run


def _benchmark(task: str, files: tuple[str, ...]) -> Callable[[bytes, Path], Path]:
    def run(data: bytes, folder: Path) -> Path:
        from sm70.data.sources import RawRow
        from sm70.eval.tasks import load_task

        parts = data.split(SPLIT, len(files) - 1)
        for name, part in zip(files, parts + [b""] * (len(files) - len(parts))):
            (folder / name).write_bytes(part)
        fmt = "usmle" if task.startswith("usmle") else task
        options = {} if fmt == "usmle" else {"split": "test"}
        items = load_task(task, folder, **options)
        cfg = _data_config(folder, {"name": "s", "path": str(folder), "format": fmt, "split": "test"})
        examine_rows((RawRow(str(folder), None, i, item) for i, item in enumerate(items)), cfg)
        return folder
    return run


# ---- recipes and overrides ----

def _recipe(data: bytes, folder: Path) -> Path:
    from sm70.config import load_config
    from sm70.data.config import DataConfig

    path = folder / "recipe.yaml"
    path.write_bytes(data)
    _written(load_config(DataConfig, path))
    return path


def _overrides(data: bytes, folder: Path) -> Path:
    from sm70.config import load_config
    from sm70.data.config import DataConfig

    # Command-line words arrive as Python decodes argv: undecodable bytes become surrogate escapes.
    words = [os.fsdecode(w) for w in data.split(b"\n") if w]
    cfg = load_config(DataConfig, None, words, out=str(folder / "out"),
                      sources=[{"name": "s", "path": "samples://medqa/test.jsonl", "format": "medqa"}])
    _written(cfg)
    return folder


def _written(cfg) -> None:
    """The config as the build writes it: printed as YAML, saved in datacard.json and manifest.json (UTF-8)."""
    cfg.to_yaml().encode("utf-8")
    json.dumps(cfg.dump(), ensure_ascii=False).encode("utf-8")


# ---- model directories ----

def _model_file(name: str) -> Callable[[bytes, Path], Path]:
    def run(data: bytes, folder: Path) -> Path:
        from sm70.model.load import check_model_dir

        if name != "config.json":
            (folder / "config.json").write_text('{"model_type": "llama"}')
        (folder / name).write_bytes(data)
        check_model_dir(folder)
        return folder
    return run


# ---- seeds: small valid inputs in each real layout, from the bundled samples ----

def _rows() -> list[dict]:
    return json.loads((SAMPLES / "medical_meadow" / "health_advice.json").read_text())[:3]


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def _medqa() -> bytes:
    return b"".join((SAMPLES / "medqa" / "test.jsonl").read_bytes().splitlines(keepends=True)[:2])


def _pubmedqa() -> bytes:
    truth = json.loads((SAMPLES / "pubmedqa" / "test_ground_truth.json").read_text())
    labelled = json.loads((SAMPLES / "pubmedqa" / "ori_pqal.json").read_text())
    pmids = list(truth)[:2]
    small = {p: {k: labelled[p][k] for k in ("QUESTION", "CONTEXTS", "final_decision")} for p in pmids}
    return json.dumps(small, indent=1).encode() + SPLIT + json.dumps({p: truth[p] for p in pmids}).encode()


def _usmle() -> bytes:
    records = json.loads((SAMPLES / "usmle" / "step1.json").read_text())[:3]
    solutions = json.loads((SAMPLES / "usmle" / "step1_solutions.json").read_text())
    return (json.dumps(records, indent=1).encode() + SPLIT +
            json.dumps({str(r["no"]): solutions[str(r["no"])] for r in records}).encode())


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(16)


def targets() -> list[Target]:
    rows = _rows()
    recipe = (b"out: runs/x\nsources:\n  - name: cards\n    path: samples://medical_meadow/health_advice.json\n"
              b"    max_rows: 5\ndecontaminate:\n  - task: medqa\ndedup: {near: false}\non_error: skip\n")
    return [
        Target("source.json", _table(".json"), [json.dumps(rows, indent=2).encode()]),
        Target("source.jsonl", _table(".jsonl"), [b"".join(json.dumps(r).encode() + b"\n" for r in rows)]),
        Target("source.csv", _table(".csv"), [_csv(rows)]),
        Target("source.parquet", _table(".parquet"), [_parquet(rows)]),
        Target("medqa", _benchmark("medqa", ("test.jsonl",)), [_medqa()]),
        Target("pubmedqa", _benchmark("pubmedqa", ("ori_pqal.json", "test_ground_truth.json")), [_pubmedqa()]),
        Target("usmle", _benchmark("usmle_step1", ("step1.json", "step1_solutions.json")), [_usmle()]),
        Target("recipe", _recipe, [recipe]),
        Target("overrides", _overrides, [b"max_tokens=512\nsources.0.max_rows=3\ndedup.threshold=0.9\nseed=7"]),
        Target("model.config", _model_file("config.json"), [b'{"model_type": "llama", "hidden_size": 128}']),
        Target("model.safetensors", _model_file("model.safetensors"), [_safetensors()]),
    ]


# ---- the atheris campaign ----

def _fuzz_one(name: str, libfuzzer_args: list[str]) -> None:
    """One target under atheris, in this process (libFuzzer ends the process when it is done)."""
    import atheris

    with atheris.instrument_imports(include=["sm70"]):
        import sm70.config  # noqa: F401
        import sm70.data.build  # noqa: F401
        import sm70.data.sources  # noqa: F401
        import sm70.eval.tasks  # noqa: F401
        import sm70.model.load  # noqa: F401
        import sm70.textfile  # noqa: F401
    target = next(t for t in targets() if t.name == name)
    scratch = Path(tempfile.mkdtemp(prefix="sm70-fuzz-"))

    def one_input(data: bytes) -> None:
        folder = Path(tempfile.mkdtemp(dir=scratch))
        try:
            check(target, data, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def campaign(seconds: int, only: list[str] | None = None) -> int:
    """Run every target for `seconds` each, in its own process; print iterations and crashes per target."""
    crashes_total = 0
    for target in targets():
        if only and target.name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"sm70-corpus-{target.name}-") as corpus:
            for i, seed in enumerate(target.seeds):
                Path(corpus, f"seed{i}").write_bytes(seed)
            artifacts = Path("runs") / "fuzz-crashes" / target.name  # runs/ is where outputs go (ignored by git)
            artifacts.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--one", target.name, f"-max_total_time={seconds}", "-rss_limit_mb=4096",
                 "-timeout=30", f"-artifact_prefix={artifacts}/", corpus],
                capture_output=True, text=True)
        runs = re.findall(r"Done (\d+) runs", proc.stderr) or re.findall(r"#(\d+)\s", proc.stderr)
        crashes = sorted(artifacts.glob("crash-*")) + sorted(artifacts.glob("timeout-*")) + sorted(artifacts.glob("oom-*"))
        crashes_total += len(crashes)
        print(f"{target.name:18} iterations {int(runs[-1]) if runs else 0:>8,}  crashes {len(crashes)}"
              + "".join(f"\n    {c}" for c in crashes), flush=True)
        if proc.returncode and not crashes:
            print(proc.stderr[-3000:], file=sys.stderr)
            crashes_total += 1
    print(f"fuzz: {crashes_total} crash(es) found")
    return 1 if crashes_total else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        _fuzz_one(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description="Coverage-guided fuzzing of every file sm70 reads (atheris).")
    parser.add_argument("--seconds", type=int, default=60, help="per target")
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    args = parser.parse_args(argv)
    return campaign(args.seconds, args.target)


if __name__ == "__main__":
    sys.exit(main())
