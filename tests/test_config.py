from pathlib import Path

import pytest

from sm70.config import Config, apply_overrides, load_config
from sm70.errors import ConfigError


class Inner(Config):
    rank: int = 8
    alpha: float = 16.0


class Outer(Config):
    out: Path
    lora: Inner = Inner()
    tasks: list[str] = []
    flag: bool = False


@pytest.mark.parametrize("overrides, expected", [
    (["out=x"], {"out": "x"}),
    (["lora.rank=64", "out=y"], {"lora": {"rank": 64}, "out": "y"}),
    (["tasks=[medqa, pubmedqa]"], {"tasks": ["medqa", "pubmedqa"]}),
    (["flag=true"], {"flag": True}),
    (["out="], {"out": ""}),
])
def test_apply_overrides(overrides, expected):
    assert apply_overrides({}, overrides) == expected


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("out: a\nlora: {rank: 4, alpha: 8}\n")
    cfg = load_config(Outer, recipe, ["lora.rank=16"])
    assert cfg.lora.rank == 16 and cfg.lora.alpha == 8 and cfg.out == Path("a")


@pytest.mark.parametrize("recipe_text, overrides, message", [
    ("out: a\nlora: {rnak: 4}\n", [], "unknown key 'lora.rnak'"),
    ("out: a\n", ["typo=1"], "unknown key 'typo'"),
    ("lora: {rank: 4}\n", [], "missing required key 'out'"),
    ("out: a\nlora: {rank: many}\n", [], "key 'lora.rank'"),
    ("- a\n- b\n", [], "a recipe is a mapping"),
    ("out: [unclosed\n", [], "not valid YAML"),
])
def test_bad_recipes_name_the_key(tmp_path, recipe_text, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        load_config(Outer, recipe, overrides)
    assert str(recipe) in str(e.value)


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["=3"])


def test_config_is_frozen():
    cfg = Outer(out="a")
    with pytest.raises(Exception):
        cfg.out = Path("b")
