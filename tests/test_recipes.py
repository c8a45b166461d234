"""Every recipe under recipes/ loads into its command's config (a typo in a recipe fails here, not mid-run)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sm70.cli import COMMANDS
from sm70.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALIASES = {"pipeline": ("run",), "index": ("index", "build")}  # folder -> command, where the names differ
NOT_SM70 = {"accelerate": "Hugging Face accelerate launch configs, read by `accelerate launch`"}


def command_for(folder: str) -> tuple[str, ...]:
    if folder in ALIASES:
        return ALIASES[folder]
    matches = [words for words in COMMANDS if words[0] == folder]
    assert len(matches) == 1, f"recipes/{folder}/: no single sm70 command named {folder!r}; add it to ALIASES"
    return matches[0]


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("**/*.yaml")), ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_loads_into_its_config(recipe):
    folder = recipe.relative_to(RECIPES).parts[0]
    if folder in NOT_SM70:
        pytest.skip(NOT_SM70[folder])
    cmd = COMMANDS[command_for(folder)]
    try:
        module = importlib.import_module(cmd.module)
    except ImportError as e:
        pytest.skip(f"{cmd.module} does not import yet: {e}")
    config = load_config(getattr(module, cmd.config), recipe)
    assert config.dump()
