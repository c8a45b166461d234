"""`sm70 export gguf` through real llama.cpp (its converter, its quantizer, its runtime), on the real
SmolLM2-135M-Instruct and on a tiny random Llama; every export card check is recomputed from files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm70.config import load_config
from sm70.errors import Sm70Error

if not os.environ.get("CI"):  # in CI llama.cpp is built first: a missing one must fail, not skip
    pytest.importorskip("llama_cpp", reason="llama.cpp is built by `make test` (the device extra)")

SMALL_CARD = dict(task_items=4, prompts=8, texts=3, max_tokens=48, threads=1)


def export(model, out, **settings):
    from sm70.export.gguf import ExportConfig, export_gguf

    return export_gguf(load_config(ExportConfig, model=str(model), out=str(out), **settings))


@pytest.fixture(scope="module")
def smollm2_adapter(smollm2, tmp_path_factory) -> Path:
    """Two QLoRA steps on the real model: enough to make the merged weights differ from the base."""
    from sm70.model.load import load_tokenizer
    from sm70.render import apply_template
    from sm70.train.sft import TrainConfig, train

    tok = load_tokenizer(smollm2)
    rows = [{"id": f"q{i}", "source": "test", "completion": a,
             "prompt": apply_template("chat", "Answer this question truthfully", q, tokenizer=tok)}
            for i, (q, a) in enumerate([("Which enzyme do statins inhibit?", "HMG-CoA reductase."),
                                        ("What is the first-line treatment for anaphylaxis?", "IM epinephrine.")])]
    data = tmp_path_factory.mktemp("export-data")
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path_factory.mktemp("export-run") / "train"
    cfg = load_config(TrainConfig, model=str(smollm2), data=str(data), out=str(out), micro_batch=2, max_length=96,
                      max_steps=2, lr=2e-3, eval_steps=2, logging_steps=1, save_steps=2, lora_r=8, lora_alpha=16)
    return Path(train(cfg)) / "adapter"


@pytest.fixture(scope="module")
def adapter_export(smollm2, smollm2_adapter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapter-export") / "export"
    assert export(smollm2, out, adapter=str(smollm2_adapter), quant="f16,q8_0", **SMALL_CARD) == 0
    return out


def card(folder: Path) -> dict:
    return json.loads((folder / "export_card.json").read_text())


def test_base_export_files_metadata_and_card(smollm2_gguf):
    import gguf

    from sm70.digest import sha256_file

    record = json.loads((smollm2_gguf / "export.json").read_text())
    assert sorted(record["files"]) == ["model-f32.gguf", "model-q8_0.gguf"]
    for name, info in record["files"].items():
        assert sha256_file(smollm2_gguf / name) == info["sha256"]
        fields = gguf.GGUFReader(str(smollm2_gguf / name)).fields
        assert fields["sm70.disclaimer"].contents() == "Decision support for clinicians, not a certified medical device."
        assert "not a certified medical device" in fields["general.description"].contents()
        assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
        tag = name.removeprefix("model-").removesuffix(".gguf")
        modelfile = (smollm2_gguf / f"Modelfile.{tag}").read_text()
        assert f"FROM ./{name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    readme = (smollm2_gguf / "README.md").read_text()
    assert "not a certified medical device" in readme and "ollama create" in readme
    assert not list(smollm2_gguf.parent.glob(".export.*")), "no work folder may be left behind"


def test_adapter_export_card_passes_for_f16_and_q8_0(adapter_export, smollm2_adapter):
    import gguf

    c = card(adapter_export)
    assert [f["quant"] for f in c["files"]] == ["f16", "q8_0"]
    for f in c["files"]:
        assert f["verdict"] == "pass", f["reasons"]
        assert f["template"]["identical"]
        assert f["tokenization"]["mismatches"] == 0 and f["tokenization"]["n"] == SMALL_CARD["prompts"]
        assert f["logits"]["top1"] >= 0.9 and f["logits"]["tokens"] > 0
        assert set(f["tasks"]) == {"medqa", "pubmedqa"} and all(t["n"] == 4 for t in f["tasks"].values())
    f16 = c["files"][0]["logits"]
    assert f16["kl_mean"] < 1e-3 and abs(f16["ppl_hf"] - f16["ppl_gguf"]) / f16["ppl_hf"] < 0.01
    fields = gguf.GGUFReader(str(adapter_export / "model-q8_0.gguf")).fields
    from sm70.model.load import fingerprint

    assert fields["sm70.adapter_fingerprint"].contents() == fingerprint(smollm2_adapter)
    assert (adapter_export / "export_card.png").stat().st_size > 1000
    assert "| `model-q8_0.gguf` |" in (adapter_export / "export_card.md").read_text()


def test_the_merged_fine_tune_is_what_the_gguf_computes(adapter_export, smollm2_gguf):
    """The adapter is in the file: its logits are the merged model's, not the base's."""
    from sm70.eval.llamacpp import GgufModel

    ids = [1, 28, 2573, 354, 260, 3419, 282, 1312, 30]
    tuned, base = GgufModel(str(adapter_export / "model-f16.gguf"), threads=1), GgufModel(
        str(smollm2_gguf / "model-f32.gguf"), threads=1)
    try:
        diff = abs(tuned.logits_for(ids) - base.logits_for(ids)).max()
    finally:
        tuned.close(), base.close()
    assert diff > 0.05


def test_verify_rechecks_a_folder_and_flags_through_the_exit_status(adapter_export):
    from sm70.export.verify import VerifyConfig, verify

    cfg = load_config(VerifyConfig, folder=str(adapter_export), min_top1=1.01, **SMALL_CARD)
    assert verify(cfg) == 1
    flagged = card(adapter_export)["files"]
    assert all(f["verdict"] == "flagged" and "top-1 agreement" in f["reasons"][0] for f in flagged)
    assert "**flagged**" in (adapter_export / "export_card.md").read_text()
    assert verify(load_config(VerifyConfig, folder=str(adapter_export), **SMALL_CARD)) == 0


def test_a_chat_template_that_differs_from_training_is_caught_and_named(smollm2, smollm2_adapter, tmp_path):
    planted = tmp_path / "base"
    planted.mkdir()
    for f in smollm2.iterdir():
        (planted / f.name).symlink_to(f) if f.suffix == ".safetensors" else shutil.copy(f, planted / f.name)
    config = json.loads((planted / "tokenizer_config.json").read_text())
    jinja = planted / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(jinja.read_text().replace("<|im_start|>assistant", "<|im_start|>bot"))
    else:
        config["chat_template"] = config["chat_template"].replace("<|im_start|>assistant", "<|im_start|>bot")
        (planted / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(Sm70Error, match="chat template mismatch.*trained with") as e:
        export(planted, tmp_path / "out", adapter=str(smollm2_adapter), quant="q8_0")
    assert "bot" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_tiny_model_exports_at_f16_and_q8_0(smollm2, tmp_path):
    from sm70.model.tiny import TinyModelConfig, build_tiny_model

    tiny = build_tiny_model(load_config(TinyModelConfig, out=str(tmp_path / "tiny"), tokenizer=str(smollm2)))
    status = export(tiny, tmp_path / "out", quant="f16,q8_0", **SMALL_CARD)
    files = card(tmp_path / "out")["files"]
    assert [f["file"] for f in files] == ["model-f16.gguf", "model-q8_0.gguf"]
    assert all(f["tokenization"]["mismatches"] == 0 and f["template"]["identical"] for f in files)
    # a random model's logits are nearly flat, so only the lossless-ish f16 must agree on top-1
    assert files[0]["logits"]["top1"] >= 0.95 and files[0]["logits"]["kl_mean"] < 1e-3
    assert status in (0, 1)


def test_a_tokenizer_llama_cpp_does_not_know_is_refused_clearly(tiny_model, tmp_path):
    with pytest.raises(Sm70Error, match="llama.cpp does not know this tokenizer"):
        export(tiny_model, tmp_path / "out", quant="q8_0", verify=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("settings, message", [
    ({"quant": "q8_0,q9_x"}, "q9_x: not a llama.cpp type"),
    ({"quant": ""}, "at least one type"),
])
def test_bad_quant_types_fail_before_any_work(smollm2, tmp_path, settings, message):
    with pytest.raises(Sm70Error, match=message):
        export(smollm2, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_and_unknown_architecture_are_clear_errors(smollm2, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(smollm2 / "config.json", bare / "config.json")
    (bare / "model.safetensors").symlink_to(smollm2 / "model.safetensors")
    with pytest.raises(Sm70Error, match="no tokenizer"):
        export(bare, tmp_path / "out", quant="q8_0", verify=False)
    for f in smollm2.iterdir():
        if not (bare / f.name).exists():
            shutil.copy(f, bare / f.name)
    config = json.loads((bare / "config.json").read_text())
    config["architectures"] = ["SpassMedDeviceForCausalLM"]
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(Sm70Error, match=r"does not support the architecture \['SpassMedDeviceForCausalLM'\]"):
        export(bare, tmp_path / "out", quant="q8_0", verify=False)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_export_leaves_no_partial_file(smollm2, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sm70.cli", "export", "gguf", f"model={smollm2}", f"out={out}",
                             "quant=f32,f16,q8_0", "verify=false"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    try:
        # kill it while it writes its GGUF files: after the converter, during the quantizer
        while time.monotonic() < deadline and not list(tmp_path.glob(".out.*/model-*.gguf")):
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.*/model-*.gguf")), "the export never reached its GGUF files"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*.gguf") if not any(part.startswith(".") for part in p.parts[-2:])]
