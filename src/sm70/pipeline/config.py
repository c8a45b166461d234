"""The pipeline file: which recipe each stage uses, and what to change in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from sm70.config import Config
from sm70.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]


class StageRef(Config):
    recipe: Path | None = None
    set: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value, applied over the recipe")


class PipelineConfig(Config):
    out: Path = Path("runs/demo")
    model: str = Field("tiny", description="'tiny' builds the embedded tiny model; else a model dir or hub id")
    tiny: dict[str, Any] = Field(default_factory=dict, description="settings for `sm70 model tiny`")
    data: StageRef
    train: StageRef
    eval: StageRef | None = Field(None, description="the evaluation setting (recipe + changes)")
    evals: dict[str, StageRef] = Field(default_factory=dict, description="named evaluation settings, each "
                                       "scored on the base and the tuned model and compared: name -> setting")
    index: StageRef | None = Field(None, description="an `sm70 index build` setting, built into OUT/index; every "
                                   "evaluation setting that names `rag` scores with and without that index")
    serve: StageRef | None = None
    eval_base: bool = Field(True, description="also evaluate the base model, and compare it with the tuned one")
    data_dir: Path | None = Field(None, description="folder with the real benchmark files (../shared/data layout)")
    plan: bool = False

    @model_validator(mode="after")
    def _some_evaluation(self):
        if self.eval is None and not self.evals:
            raise ValueError("give an evaluation setting: eval: {recipe: ...} or evals: {name: {recipe: ...}}")
        return self

    def eval_settings(self) -> dict[str, StageRef]:
        """Setting name -> StageRef; the unnamed `eval` is the setting '' (stages eval_base, eval_tuned)."""
        return {**({"": self.eval} if self.eval is not None else {}), **self.evals}


class DemoConfig(Config):
    pipeline: Path = Path("recipes/pipeline/demo.yaml")
    out: Path = Path("runs/demo")
    data_dir: Path | None = None
    plan: bool = False
    set: dict[str, Any] = Field(default_factory=dict, description="overrides for the pipeline file")


def find_recipe(path: str | Path) -> Path:
    """A recipe path as given, or relative to the repository (so `sm70 demo` works from any folder)."""
    path = Path(path)
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{path}: recipe not found (looked in {Path.cwd()} and {REPO_ROOT})")
