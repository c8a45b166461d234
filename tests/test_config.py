from pathlib import Path

import pytest

from sm70.config import Config, apply_overrides, load_config, read_recipe
from sm70.errors import ConfigError, Sm70Error


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
    ("out: a\nlora:\n\trank: 4\n", [], r":3: not valid YAML: .* tab"),
    ("out: a\nout: b\n", [], ":2: not valid YAML: key 'out' appears twice"),
    ("out: a\nlora: {rank: 4, rank: 8}\n", [], "key 'rank' appears twice"),
    ("out: a\nlora: {rank: 2024-13-45}\n", [], "not valid YAML: month must be in 1..12"),
    ("out: a\nlora: {rank: " + "9" * 5000 + "}\n", [], "not valid YAML"),
    ("out: " + "[" * 20_000 + "\n", [], "not valid YAML"),
    ("out: !!python/object/apply:os.system [echo]\n", [], "not valid YAML: .*constructor"),
    ("out: a\nlora: 3\n", [], "key 'lora'"),
    ("out: a\ntasks: medqa\n", [], "key 'tasks'"),
    ("out: a\nflag: maybe\n", [], "key 'flag'"),
    ("out: a\nlora: {rank: [" + "1, " * 5000 + "1]}\n", [], r"characters\)"),  # a long bad value, shortened
    ("out: a\n", ["lora.rank=abc"], "key 'lora.rank'"),
    ("out: a\n", ["lora.rank=1.5"], "key 'lora.rank'"),
    ("out: a\n", ["lora..rank=4"], "an empty part in the key"),
    ("out: a\n", ["tasks.3=x"], "key 'tasks'"),
    ("out: a\ntasks: [medqa]\n", ["tasks.3=x"], "'3' is not an index of the 1-item list"),
    ("out: a\n", ["lora.rank.deep=1"], "key 'lora.rank'"),
    ("out: a\n", ["flag=[unclosed"], "key 'flag'"),
    ('out: "caf\\udce9"\n', [], "unpaired UTF-16 surrogate"),        # the data card could not be written
    ("out: a\n", ["out=caf\udce9"], r"b'out=caf\\xe9': not valid UTF-8"),  # argv bytes that are not UTF-8
])
def test_bad_recipes_name_the_key(tmp_path, recipe_text, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as e:
        load_config(Outer, recipe, overrides)
    assert str(recipe) in str(e.value) or overrides
    assert len(str(e.value)) < 2000, "a bad value is quoted, not dumped"


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["=3"])


def test_config_is_frozen():
    cfg = Outer(out="a")
    with pytest.raises(Exception):
        cfg.out = Path("b")


@pytest.mark.parametrize("content, message", [
    (b"", None),
    (b"\xef\xbb\xbfout: a\n", None),                             # a UTF-8 byte-order mark is fine
    (b"out: caf\xe9\n", "r.yaml:1: not valid UTF-8 at byte 8"),
    ("out: a\n".encode("utf-16"), "UTF-16 byte-order mark"),
    (b"\x00\x01\x02", "binary file"),
    (b"PK\x03\x04", "ZIP archive"),
])
def test_recipe_bytes(tmp_path, content, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content)
    if message is None:
        assert isinstance(read_recipe(recipe), dict)
        return
    with pytest.raises(Sm70Error, match=message) as e:
        read_recipe(recipe)
    assert str(recipe) in str(e.value)


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    recipe = tmp_path / "r.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values expanded
    recipe.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_config(Outer, recipe)


def test_a_recipe_past_the_size_limit_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("out: a\n" + "# padding\n" * 200_000)
    with pytest.raises(Sm70Error, match="larger than the 1,048,576-byte limit"):
        read_recipe(recipe)


def test_anchors_and_merge_keys_still_work(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: &base {rank: 4, alpha: 8}\nout: a\nlora:\n  <<: *base\n  rank: 16\n")
    data = read_recipe(recipe)
    del data["base"]
    assert load_config(Outer, None, [], **data).lora == Inner(rank=16, alpha=8)


def test_an_override_reaches_into_a_list():
    data = {"sources": [{"name": "a"}, {"name": "b"}]}
    assert apply_overrides(data, ["sources.1.path=x"]) == {"sources": [{"name": "a"}, {"name": "b", "path": "x"}]}
    assert data == {"sources": [{"name": "a"}, {"name": "b"}]}, "the recipe's own data is not changed"
