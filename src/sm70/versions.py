"""Installed versions of the libraries a result depends on, for manifests, results and provenance."""

from __future__ import annotations

import sys
from importlib import metadata


def version(package: str) -> str | None:
    """The installed distribution's version, None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions(packages: tuple[str, ...], *, python: bool = False, missing: bool = True) -> dict[str, str | None]:
    """{package: version} for `packages` (with the interpreter's first when `python`); a package that is
    not installed maps to None, or is left out when not `missing`."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]} if python else {}
    for name in packages:
        got = version(name)
        if got is not None or missing:
            found[name] = got
    return found
