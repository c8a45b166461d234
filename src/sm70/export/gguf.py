"""`sm70 export gguf model=DIR [adapter=DIR] out=DIR quant=f16,q8_0,q4_k_m`: the model as GGUF files
for llama.cpp, Ollama and LM Studio on a device, each with its evidence.

1. An adapter is merged into the unquantized base (never into 4-bit weights: that rounds the update
   away), in the base's own dtype.
2. llama.cpp's converter writes one GGUF in that dtype (bf16 stays bf16) with the tokenizer and the
   chat template inside; llama.cpp's quantizer makes each requested type from it, writing sm70's
   metadata (version, fingerprints, data card hash, disclaimer) into every header.
3. Beside each file an Ollama Modelfile; in the folder a README and the export card (verify.py).

Everything is written into a hidden sibling folder that replaces `out` only when complete: an
interrupted export leaves no partial file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pydantic import Field, field_validator

from sm70.atomic import atomic_dir
from sm70.config import Config
from sm70.digest import sha256_file
from sm70.errors import Sm70Error
from sm70.export import llamacpp
from sm70.serve.api.serving import DEFAULT_SYSTEM_PROMPT

DISCLAIMER = "Decision support for clinicians, not a certified medical device."
CONVERTER_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


class VerifySettings(Config):
    """What the export card measures, and the thresholds a file must meet."""
    data: Path | None = Field(None, description="data build folder (train.jsonl, val.jsonl): training prompts for the "
                              "tokenizer check, validation rows for logit fidelity; default: the adapter's training data")
    medqa: str | None = Field(None, description="MedQA file for task fidelity (default: the bundled sample)")
    pubmedqa: str | None = Field(None, description="PubMedQA file or folder for task fidelity (default: the sample)")
    task_items: int = Field(200, description="items per task scored by the HF model and by each GGUF")
    prompts: int = Field(64, description="training and benchmark prompts whose token ids must be identical")
    texts: int = Field(32, description="validation rows for KL, top-1 agreement and perplexity")
    max_tokens: int = Field(256, description="tokens per validation row read for logit fidelity")
    kv_cache: str = Field("f16", description="llama.cpp key/value cache in the checks: f16 is what a device runs")
    min_top1: float = Field(0.90, description="a file whose top-1 agreement with the HF model is lower is flagged")
    max_acc_drop: float = Field(0.05, description="a file whose accuracy is this much lower (and significantly, "
                                "McNemar p < alpha) than the HF model's on a task is flagged")
    alpha: float = 0.05
    threads: int | None = Field(None, description="CPU threads for llama.cpp and torch")
    seed: int = 0


class ExportConfig(VerifySettings):
    model: str = Field(description="the Hugging Face model directory (a base, or a merged fine-tune)")
    adapter: Path | None = Field(None, description="a LoRA adapter from `sm70 train`, merged into the unquantized base")
    out: Path = Field(description="the export folder to write")
    quant: list[str] = Field(default_factory=lambda: ["f16", "q8_0"],
                             description=f"GGUF types, one file each: {', '.join(llamacpp.QUANTS)}")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="the default SYSTEM prompt of the Modelfiles")
    verify: bool = Field(True, description="write the export card (false: files only; `sm70 export verify` later)")

    @field_validator("quant", mode="before")
    @classmethod
    def _split(cls, value):
        return [q.strip() for q in value.split(",") if q.strip()] if isinstance(value, str) else value


def export_gguf(cfg: ExportConfig) -> int:
    quants = llamacpp.check_quants(cfg.quant)
    model_dir = Path(cfg.model)
    _check_model(model_dir)
    llamacpp.converter_script()  # fail before the merge if the converter is missing
    tokenizer = training_tokenizer(cfg)
    source_dtype = _source_dtype(model_dir)
    data = cfg.data or training_data(cfg.adapter)
    meta = _metadata(cfg, model_dir, data)
    with atomic_dir(cfg.out) as tmp:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{tmp.name}.work.") as work:
            work = Path(work)
            hf_dir = _merged(cfg, model_dir, source_dtype, work) if cfg.adapter else model_dir
            source = work / f"model-{CONVERTER_DTYPES[source_dtype]}.gguf"
            (work / "metadata.json").write_text(json.dumps({"general.description": f"{DISCLAIMER} Exported by sm70."}))
            print(f"export: converting {hf_dir} ({source_dtype}) with llama.cpp's converter")
            llamacpp.convert(hf_dir, source, CONVERTER_DTYPES[source_dtype], work / "metadata.json")
            files = []
            for quant in quants:
                name = f"model-{quant}.gguf"
                print(f"export: {name}")
                llamacpp.quantize(source, tmp / name, quant, meta, cfg.threads)
                files.append(name)
        write_folder(cfg, tokenizer, tmp, files, meta)
        status = 0
        if cfg.verify:
            from sm70.export.verify import verify_folder

            status = verify_folder(tmp, cfg)
    print(f"export: {', '.join(files)} -> {cfg.out}" + ("" if status == 0 else " (flagged: see export_card.md)"))
    return status


def training_tokenizer(cfg: ExportConfig):
    """The tokenizer and chat template the model was trained with: the adapter folder's (training
    saves it there), else the model's. A base whose template differs from its adapter's is refused:
    the GGUF would carry a template the fine-tune never saw."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cfg.adapter or cfg.model))
    if cfg.adapter:
        base = AutoTokenizer.from_pretrained(cfg.model).chat_template or ""
        if base != (tokenizer.chat_template or ""):
            raise Sm70Error(f"chat template mismatch: {cfg.model} has a chat template that differs from the one the "
                            f"adapter {cfg.adapter} was trained with, {first_difference(tokenizer.chat_template or '', base)}")
    return tokenizer


def first_difference(a: str, b: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first at character {at}: {a[max(0, at - 20):at + 30]!r} vs {b[max(0, at - 20):at + 30]!r}"


def write_folder(cfg: ExportConfig, tokenizer, folder: Path, files: list[str], meta: dict) -> None:
    """Modelfiles, the folder's README and export.json (what the card and `verify` read back)."""
    from sm70.export.modelfile import modelfile
    from sm70.export.readme import export_readme

    for name in files:
        text = modelfile(tokenizer, name, cfg.system_prompt, DISCLAIMER)
        (folder / f"Modelfile.{name.removeprefix('model-').removesuffix('.gguf')}").write_text(text)
    record = {"model": cfg.model, "adapter": str(cfg.adapter) if cfg.adapter else None, "metadata": meta,
              "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
                        for name in files},
              "settings": cfg.dump()}
    (folder / "export.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (folder / "README.md").write_text(export_readme(cfg, files, meta))


def _check_model(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise Sm70Error(f"model={model_dir}: no config.json (a Hugging Face model directory is needed)")
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise Sm70Error(f"model={model_dir}: no tokenizer (tokenizer.json or tokenizer.model): a GGUF carries "
                        "its tokenizer, so the export needs it")


def _source_dtype(model_dir: Path) -> str:
    """The dtype the weights are stored in: the converter keeps it (no bf16 -> f16 rounding)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise Sm70Error(f"model={model_dir}: no *.safetensors weights")
    dtypes = set()
    with safe_open(str(files[0]), framework="pt") as f:
        for key in list(f.keys())[:50]:
            dtypes.add(str(f.get_slice(key).get_dtype()).lower())
    named = {"f32": "float32", "float32": "float32", "f16": "float16", "float16": "float16",
             "bf16": "bfloat16", "bfloat16": "bfloat16"}
    found = {named.get(d) for d in dtypes} - {None}
    if len(found) != 1:
        raise Sm70Error(f"model={model_dir}: weights in {sorted(dtypes)}; export takes one float dtype "
                        "(a quantized checkpoint must be merged or dequantized first)")
    return found.pop()


def training_data(adapter: Path | None) -> Path | None:
    """The data build an adapter was trained on, from its run's manifest (None when unknown)."""
    manifest = Path(adapter).parent / "manifest.json" if adapter else None
    if manifest and manifest.is_file():
        data = json.loads(manifest.read_text()).get("config", {}).get("data")
        if data and Path(data).is_dir():
            return Path(data)
    return None


def _metadata(cfg: ExportConfig, model_dir: Path, data: Path | None) -> dict[str, str]:
    import sm70
    from sm70.model.load import fingerprint

    meta = {"sm70.version": sm70.__version__, "sm70.disclaimer": DISCLAIMER,
            "sm70.base_fingerprint": fingerprint(model_dir)}
    if cfg.adapter:
        meta["sm70.adapter_fingerprint"] = fingerprint(cfg.adapter)
    card = data / "datacard.json" if data else None
    if card and card.is_file():
        meta["sm70.datacard_sha256"] = sha256_file(card)
    return meta


def _merged(cfg: ExportConfig, model_dir: Path, dtype: str, work: Path) -> Path:
    from sm70.train.merge import MergeConfig, merge

    print(f"export: merging {cfg.adapter} into the unquantized base ({dtype})")
    return merge(MergeConfig(base=str(model_dir), adapter=cfg.adapter, out=work / "merged", dtype=dtype))
