"""Bundled sample data, written for sm70, in the exact layouts of the real datasets.

A few dozen rows per format (Medical Meadow, MedQA-USMLE, PubMedQA, USMLE self-assessment) so
the demo, the tests and the tiny model's tokenizer run without any download. The samples plant
the defects the pipeline must handle: exact and near duplicates and one leaked MedQA test question
in `medical_meadow/`, and one instance of each known PDF-extraction defect in `usmle/`.
"""

from __future__ import annotations

import pathlib
from importlib import resources


def sample_path(*parts: str) -> pathlib.Path:
    """Filesystem path of a bundled sample file or folder, e.g. `sample_path("medqa", "test.jsonl")`."""
    path = pathlib.Path(str(resources.files("sm70.samples").joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(f"no bundled sample {'/'.join(parts)!r} (looked in {path})")
    return path
