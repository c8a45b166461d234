"""Write requirements/lock.txt: every package a fresh `make install` + `make device` resolves, pinned.

Run by `make lock`. pip resolves `.[dev,device,rag-dense]` from scratch (`--dry-run --ignore-installed`, so
nothing installed here leaks in and no sdist is compiled: llama-cpp-python's metadata is enough) and
reports what it would install; this script keeps those pins. torch stays out: the Makefile's `TORCH`
pins it, because the right wheel (CPU or CUDA) depends on the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
SKIP = {"sm70", "torch"}
HEADER = """\
# The versions `make install` and `make device` install (pip constraints, `pip install -c`): those the
# last green CI ran with. pyproject.toml keeps ranges for people who install sm70 into their own
# environment. Refresh with `make lock` (then run `make test`); tests/test_lock.py fails when
# pyproject.toml asks for something this file does not satisfy.
"""


def resolve(torch: str) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", str(report), torch, "-e", f"{ROOT}[dev,device,rag-dense]"], check=True)
        installs = json.loads(report.read_text())["install"]
    pins = {(i["metadata"]["name"], i["metadata"]["version"]) for i in installs}
    return sorted((n, v) for n, v in pins if n.lower().replace("_", "-") not in SKIP)


def main() -> None:
    torch = sys.argv[1] if len(sys.argv) > 1 else "torch==2.13.0"
    pins = resolve(torch)
    tmp = LOCK.with_suffix(".tmp")
    tmp.write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in pins))
    tmp.replace(LOCK)
    print(f"{LOCK.relative_to(ROOT)}: {len(pins)} packages pinned (with {torch})")


if __name__ == "__main__":
    main()
