"""requirements/lock.txt agrees with pyproject.toml: every requirement of the installed extras is
pinned there at a version its range allows, and every line is an exact pin. When this fails, run
`make lock` (and `make test`) and commit the lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
EXTRAS = ("dev", "device")       # what `make install` and `make device` install
NOT_LOCKED = {"torch"}          # the Makefile's TORCH pins it (CPU or CUDA wheel, by host)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    found = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert m, f"{LOCK.name}:{n}: not an exact pin: {line!r}"
            found[canonical(m.group(1))] = m.group(2)
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


def disagreements(lock_text: str) -> list[str]:
    locked, problems = pins(lock_text), []
    for req in requirements():
        name = canonical(req.name)
        if name in NOT_LOCKED or (req.marker is not None and not req.marker.evaluate()):
            continue
        if name not in locked:
            problems.append(f"{req}: not in {LOCK.name}")
        elif not req.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{req}: {LOCK.name} pins {locked[name]}")
    return problems


def test_the_lock_satisfies_pyproject():
    problems = disagreements(LOCK.read_text())
    assert not problems, "pyproject.toml and the lock disagree (run `make lock`):\n" + "\n".join(problems)


@pytest.mark.parametrize("edit, problem", [
    (lambda t: re.sub(r"(?m)^peft==.*\n", "", t), "peft>=0.17: not in lock.txt"),
    (lambda t: re.sub(r"(?m)^peft==.*$", "peft==0.16.0", t), "peft>=0.17: lock.txt pins 0.16.0"),
])
def test_a_lock_that_falls_behind_pyproject_is_named(edit, problem):
    assert problem in disagreements(edit(LOCK.read_text()))
