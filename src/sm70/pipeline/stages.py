"""Stages of the pipeline, and when each is up to date.

A stage is skipped when its outputs are complete (`manifest.json` says `"status": "complete"`) and its
inputs hash the same as when it last ran. Inputs are the stage's resolved config, the content of every
file it names outside the pipeline folder, and the manifests of the stages it reads from, so changing a
recipe re-runs that stage and everything downstream of it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sm70.atomic import write_json
from sm70.cli import COMMANDS
from sm70.config import Config, load_config
from sm70.digest import sha256_file
from sm70.model.load import fingerprint

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@dataclass
class Stage:
    name: str
    command: tuple[str, ...]            # key of sm70.cli.COMMANDS
    out: Path
    recipe: Path | None = None
    overrides: list[str] = field(default_factory=list)
    after: tuple[str, ...] = ()         # stages whose outputs this one reads
    resumable: bool = False             # an interrupted run continues with resume=true
    is_complete: Callable[[Path], bool] | None = None
    own_process: bool = False           # run in a process of its own, which returns all its memory on exit

    def execute(self, config: Config) -> Any:
        if self.own_process:
            return run_in_own_process(self, config)
        cmd = COMMANDS[self.command]
        return getattr(importlib.import_module(cmd.module), cmd.function)(config)

    def config(self, extra: list[str] = ()) -> Config:
        cmd = COMMANDS[self.command]
        cls = getattr(importlib.import_module(cmd.module), cmd.config)
        return load_config(cls, self.recipe, [*self.overrides, *extra])

    def complete(self) -> bool:
        if self.is_complete is not None:
            return self.is_complete(self.out)
        return manifest_status(self.out) == "complete"


def run_in_own_process(stage: Stage, config: Config) -> int:
    """`python -m sm70.cli COMMAND resolved-config.yaml`: the model a stage loads (train, evaluation)
    leaves with its process, host and GPU memory alike, so the next stage's load starts from nothing.
    In one process the pipeline kept every stage's model (reference cycles in Trainer and engines
    outlive the call), and on one 48-80 GB GPU the second 35 GiB 70B load would not fit."""
    import subprocess
    import sys
    import tempfile

    from sm70.errors import Sm70Error
    from sm70.train.distributed import die_with_parent

    with tempfile.TemporaryDirectory(prefix="sm70-stage-") as tmp:
        recipe = Path(tmp) / f"{stage.name}.yaml"
        recipe.write_text(config.to_yaml())
        done = subprocess.run([sys.executable, "-m", "sm70.cli", *stage.command, str(recipe)],
                              preexec_fn=die_with_parent)
    if done.returncode != 0:
        raise Sm70Error(f"stage {stage.name} failed (exit status {done.returncode}); its error is above")
    return done.returncode


def manifest_status(out: Path) -> str | None:
    try:
        return json.loads((out / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def input_hash(stage: Stage, config: Config, stages: dict[str, Stage], pipeline_out: Path) -> str:
    h = hashlib.sha256(json.dumps(config.dump(), sort_keys=True, default=str).encode())
    # Recipes name bundled samples as `samples://...` and evaluation tasks without a `data` path read
    # them too; neither is a file path in the config, so the samples count as an input of every stage.
    h.update(f"samples={fingerprint(SAMPLES)}\n".encode())
    for path in sorted(_named_paths(config.dump())):
        if _inside(path, pipeline_out):
            continue  # outputs of other stages: covered by their manifests below
        h.update(f"{path}={fingerprint(path)}\n".encode())
    for name in stage.after:
        upstream = stages[name].out
        manifest = upstream / "manifest.json"
        h.update(f"{name}={sha256_file(manifest) if manifest.is_file() else fingerprint(upstream)}\n".encode())
    return h.hexdigest()


def reset(out: Path) -> None:
    """Move a stale output aside rather than let a changed run resume from it."""
    if out.exists():
        stale = out.with_name(out.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        out.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)


class State:
    """`pipeline-state.json`: the input hash each stage last started and finished with."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, name: str) -> dict:
        return self.data.get(name, {})

    def set(self, name: str, **values) -> None:
        self.data[name] = {**self.get(name), **values}
        write_json(self.path, self.data)


def _named_paths(obj) -> set[Path]:
    found: set[Path] = set()
    if isinstance(obj, dict):
        for v in obj.values():
            found |= _named_paths(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _named_paths(v)
    elif isinstance(obj, str) and "/" in obj and "\n" not in obj and len(obj) < 4096:
        path = Path(obj)
        if path.exists():
            found.add(path.resolve())
    return found


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False
