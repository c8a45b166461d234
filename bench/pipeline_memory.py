"""Peak resident memory of a pipeline run: `python bench/pipeline_memory.py [OUT] [key=value ...]`.

Runs `sm70 demo` (or `sm70 run RECIPE` with `recipe=`) and samples, every 0.1 s, the resident memory of
the pipeline process and of every process under it (stages in their own processes, training workers).
Prints the peak of the pipeline process, the peak of the largest single process, and the peak of the
whole tree at one moment, then one summary line. Linux only (reads /proc).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


def tree(root: int) -> list[int]:
    """root and its descendants, from /proc/*/stat parent ids."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv and "=" not in argv[0] else Path(tempfile.mkdtemp(prefix="sm70-mem-")) / "demo"
    rest = [a for a in argv if "=" in a]
    recipe = [a.split("=", 1)[1] for a in rest if a.startswith("recipe=")]
    rest = [a for a in rest if not a.startswith("recipe=")]
    command = ["run", recipe[0]] if recipe else ["demo"]
    proc = subprocess.Popen([sys.executable, "-m", "sm70.cli", *command, f"out={out}", *rest],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    main_peak = single_peak = tree_peak = 0
    started = time.time()
    while proc.poll() is None:
        sizes = [rss(pid) for pid in tree(proc.pid)]
        main_peak = max(main_peak, sizes[0])
        single_peak = max(single_peak, max(sizes))
        tree_peak = max(tree_peak, sum(sizes))
        time.sleep(0.1)
    seconds = time.time() - started
    if proc.returncode != 0:
        print(proc.stderr.read()[-3000:], file=sys.stderr)
        print(f"pipeline failed with exit status {proc.returncode}")
        return 1
    gib = 2**30
    print(f"pipeline process peak RSS:       {main_peak / gib:.2f} GiB")
    print(f"largest single process peak RSS: {single_peak / gib:.2f} GiB")
    print(f"whole process tree peak RSS:     {tree_peak / gib:.2f} GiB")
    print(f"summary: sm70 {' '.join(command)} in {seconds:.0f} s, peak RSS {tree_peak / gib:.2f} GiB "
          f"(pipeline process {main_peak / gib:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
