"""bench/gpu_check.py on a host without CUDA: one line and exit status 2, before anything heavy runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_says_so_and_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA host: run bench/gpu_check.py itself")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert done.returncode == 2, done.stderr
    assert done.stdout.count("\n") == 1 and "no CUDA GPU" in done.stdout
