"""The run manifest: enough to say exactly what produced an adapter, and whether it is finished.
`status` becomes "complete" only in the last write of a run, after every other output exists."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

from sm70.digest import sha256_file
from sm70.versions import versions as library_versions

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "sm70")


sha256 = sha256_file


def versions() -> dict[str, str | None]:
    return library_versions(LIBRARIES)


def git_commit() -> str | None:
    """The source commit when running from a checkout; None for an installed package."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
