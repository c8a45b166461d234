"""Every serving recipe loads into ServeConfig; vLLM is imported only when selected."""

import sys
from pathlib import Path

import pytest

from sm70.config import load_config
from sm70.serve.main import ServeConfig

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "serve").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(recipe):
    proxy = "upstream" in recipe.read_text()
    cfg = load_config(ServeConfig, recipe, [] if proxy else ["model=/tmp/m"])
    assert (cfg.model is None and len(cfg.upstream) > 1) if proxy else cfg.model == Path("/tmp/m")
    assert cfg.auth == "keys" and cfg.keys is not None         # no recipe serves without keys
    assert not cfg.audit_content                               # patient text stays out of the log by default


def test_vllm_missing_is_a_clear_error(tiny_model, tmp_path, capsys):
    from sm70.cli import main

    if "vllm" in sys.modules or any(Path(p, "vllm").is_dir() for p in sys.path if p):
        pytest.skip("vllm is installed here")
    assert main(["serve", f"model={tiny_model}", "engine=vllm", "auth=none",
                 f"audit_log={tmp_path / 'audit.log'}"]) == 2
    assert "vllm is not installed" in capsys.readouterr().err
