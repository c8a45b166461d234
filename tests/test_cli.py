import importlib
import subprocess
import sys

import pytest

from sm70.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for words in COMMANDS:
        assert " ".join(words) in out
    assert "not a certified medical device" in out


def test_unknown_command_is_a_clean_error(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command" in err and "Traceback" not in err


def test_unknown_key_is_a_clean_error(tmp_path, capsys):
    assert main(["model", "tiny", str(tmp_path / "m"), "hiden_size=64"]) == 2
    assert "unknown key 'hiden_size'" in capsys.readouterr().err


def test_too_many_positionals(tmp_path, capsys):
    assert main(["model", "tiny", "a", "b"]) == 2
    assert "unexpected argument 'b'" in capsys.readouterr().err


@pytest.mark.parametrize("words", list(COMMANDS))
def test_every_command_resolves(words):
    cmd = COMMANDS[words]
    module = importlib.import_module(cmd.module)
    assert hasattr(module, cmd.config) and callable(getattr(module, cmd.function))


def test_help_is_instant_and_imports_no_torch():
    code = "import sys; from sm70.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_every_command_has_help_from_its_config(capsys):
    from sm70.cli import COMMANDS, main

    for words in COMMANDS:
        assert main([*words, "--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: sm70 {' '.join(words)}") and "keys (key=value" in text, words
        assert main(["help", *words]) == 0
        assert capsys.readouterr().out == text


def test_train_help_names_lora_r_with_type_default_and_description(capsys):
    from sm70.cli import main

    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    line = next(i for i, l in enumerate(text.splitlines()) if l.strip().startswith("lora_r "))
    assert "int, default 16" in text.splitlines()[line] and "LoRA rank" in text.splitlines()[line + 1]
    assert "recipes/train/demo.yaml" in text  # the recipes shipped for the command
    assert main(["help", "nope"]) == 2
