"""The long fuzzing campaign over every file sm70 reads (atheris; `pip install -e '.[fuzz]'`).

    .venv/bin/python bench/fuzz.py --seconds 40      # per target; prints iterations and crashes per target

The targets and their contract (return, or raise an Sm70Error that names the file) live in
tests/inputs/targets.py, where the short seeded run of the test suite uses them too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "inputs"))
from targets import main  # noqa: E402

sys.exit(main())
