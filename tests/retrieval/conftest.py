from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_docs


@pytest.fixture
def docs(tmp_path) -> Path:
    return make_docs(tmp_path / "docs")
