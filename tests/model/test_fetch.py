"""`sm70 model fetch` / `sm70 model import` on the real SmolLM2-135M-Instruct, and GGUF files that are not."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from sm70.config import load_config
from sm70.errors import Sm70Error
from sm70.model.fetch import CATALOG, FetchConfig, cached_wheel, fetch
from sm70.model.importer import ImportConfig, import_gguf

ENTRY = CATALOG["smollm2-135m-instruct"]


def test_the_fetched_model_is_an_ordinary_hf_directory(smollm2):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json", "provenance.json"):
        assert (smollm2 / name).is_file(), name
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config  # dequantized: an ordinary model, loadable and savable
    provenance = json.loads((smollm2 / "provenance.json").read_text())
    assert provenance["source"]["sha256"] == ENTRY.member_sha256
    assert provenance["source"]["wheel_sha256"] == ENTRY.wheel_sha256 and provenance["source"]["licence"] == "Apache-2.0"
    assert provenance["dequantized"] is True and "Q4_1" in provenance["note"]  # says the weights are Q4_1's
    assert provenance["gguf"]["fields"]["general.architecture"] == "llama"
    assert provenance["parameters"] == 134_515_008


def test_fetching_again_does_nothing(smollm2, capsys):
    before = (smollm2 / "model.safetensors").stat().st_mtime_ns
    fetch(load_config(FetchConfig, name="smollm2-135m-instruct", out=str(smollm2)))
    assert "nothing to do" in capsys.readouterr().out
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == before


def test_the_tokenizer_and_chat_template_are_the_models(smollm2):
    from sm70.model.load import load_tokenizer

    tok = load_tokenizer(smollm2)
    assert len(tok) == 49_152 and tok.eos_token == "<|im_end|>" == tok.pad_token
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens.count("<|im_start|>") == 3 and tokens.count("<|im_end|>") == 2  # special tokens stay whole


@pytest.fixture(scope="module")
def gguf_file(smollm2, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    with zipfile.ZipFile(cached_wheel(ENTRY)) as zf:
        path.write_bytes(zf.read(ENTRY.member))
    return path


def unknown_architecture(tmp: Path) -> Path:
    import gguf
    import numpy as np

    path = tmp / "foo.gguf"
    writer = gguf.GGUFWriter(str(path), "notamodel")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("case", ["not a GGUF", "empty", "truncated", "unknown architecture", "missing"])
def test_bad_gguf_files_get_a_clear_error_and_leave_nothing(case, gguf_file, tmp_path):
    path = tmp_path / "bad.gguf"
    if case == "not a GGUF":
        path.write_text('{"this": "is json"}')
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        with open(gguf_file, "rb") as f:
            path.write_bytes(f.read(40 << 20))
    elif case == "unknown architecture":
        path = unknown_architecture(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(Sm70Error) as err:
        import_gguf(load_config(ImportConfig, file=str(path), out=str(out)))
    assert str(path) in str(err.value)
    expected = {"not a GGUF": "not a GGUF", "empty": "not a GGUF", "truncated": "truncated",
                "unknown architecture": "cannot load", "missing": "not found"}[case]
    assert expected in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    fake = tmp_path / ENTRY.wheel
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(ENTRY.member, b"GGUF not really")
    with pytest.raises(Sm70Error, match="not the pinned"):
        fetch(load_config(FetchConfig, name="smollm2-135m-instruct", out=str(tmp_path / "m"), wheel=str(fake)))
    assert not (tmp_path / "m").exists()


def test_unknown_names_and_the_offline_hub_fail_at_once(tmp_path, monkeypatch):
    with pytest.raises(Sm70Error, match="unknown model 'nope'"):
        fetch(load_config(FetchConfig, name="nope", out=str(tmp_path / "m")))
    monkeypatch.delenv("SM70_ALLOW_HUB", raising=False)
    with pytest.raises(Sm70Error, match="the hub is off"):
        fetch(load_config(FetchConfig, name="hf:HuggingFaceTB/SmolLM2-135M-Instruct", out=str(tmp_path / "m")))
