from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_docs


@pytest.fixture
def docs(tmp_path) -> Path:
    return make_docs(tmp_path / "docs")


@pytest.fixture(scope="module")
def one_thread():
    # Two cores shared by several test runs: one thread avoids OpenMP oversubscription.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
