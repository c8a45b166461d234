"""`sm70 model import FILE.gguf out=DIR`: a GGUF file -> an ordinary Hugging Face model directory.

transformers' GGUF loader dequantizes the tensors into a plain `*ForCausalLM` and rebuilds the
tokenizer and chat template from the file's metadata; every later stage (train, merge, eval, serve)
then loads the directory like any other. A GGUF is already quantized: the dequantized weights are
that quantization's values, not the original release's, and provenance.json says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from sm70.atomic import atomic_dir, write_json
from sm70.config import Config
from sm70.digest import sha256_file
from sm70.errors import Sm70Error
from sm70.versions import version

GGUF_MAGIC = b"GGUF"
# Tensor types that hold the weights exactly (no rounding): anything else is a lossy quantization.
LOSSLESS = {"F32", "F16", "BF16", "F64"}


class ImportConfig(Config):
    file: Path = Field(description="the GGUF file to import")
    out: Path = Field(description="the Hugging Face model directory to write")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of the saved safetensors")


def gguf_metadata(path: Path) -> dict:
    """The GGUF's own description of itself (name, licence, architecture, tensor types), or a clear
    error when the file is not a GGUF or is cut short."""
    if not path.is_file():
        raise Sm70Error(f"{path}: not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise Sm70Error(f"{path}: not a GGUF file (starts with {magic!r}, a GGUF starts with b'GGUF')")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError) as e:
        raise Sm70Error(f"{path}: unreadable GGUF, truncated or damaged ({type(e).__name__}: {e})") from None
    fields = {}
    for key in ("general.name", "general.architecture", "general.license", "general.organization",
                "general.basename", "general.finetune", "general.size_label", "general.file_type"):
        if key in reader.fields:
            fields[key] = reader.fields[key].contents()
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    # A truncated file can still parse its header: the last tensor must end inside the file.
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise Sm70Error(f"{path}: truncated GGUF ({path.stat().st_size:,} bytes, its tensors need {end:,})")
    return {"fields": fields, "tensor_types": types, "tensors": len(reader.tensors),
            "version": int(reader.fields["GGUF.version"].contents()) if "GGUF.version" in reader.fields else None}


def load_gguf(path: Path, dtype):
    """transformers' GGUF loader, with its refusals turned into errors that name the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError) as e:
        raise Sm70Error(f"{path}: transformers cannot load this GGUF ({e})") from None
    # The loader marks the model as GGUF-quantized, and save_pretrained refuses such a model; once
    # dequantized it is an ordinary model, so the marks go.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def import_gguf(cfg: ImportConfig, source: dict | None = None) -> Path:
    """Write the HF directory atomically, reload it to check the weights, then provenance.json.
    `source` is what `sm70 model fetch` knows about where the file came from."""
    import torch
    import transformers

    from sm70.model.load import dtype_from_name

    path = Path(cfg.file)
    meta = gguf_metadata(path)
    lossy = sorted(t for t in meta["tensor_types"] if t not in LOSSLESS)
    print(f"importing {path} ({meta['fields'].get('general.name', '?')}, "
          f"{meta['fields'].get('general.architecture', '?')}, tensor types {meta['tensor_types']})")
    digest = sha256_file(path)
    dtype = dtype_from_name(cfg.dtype)
    model, tokenizer = load_gguf(path, dtype)
    out = Path(cfg.out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _check_reload(model, tmp, dtype)
        write_json(tmp / "provenance.json", {
            "status": "complete",
            "source": {"file": str(path), "sha256": digest, "bytes": path.stat().st_size, **(source or {})},
            "gguf": meta,
            "dequantized": bool(lossy),
            "note": (f"the GGUF holds {', '.join(lossy)} tensors: these weights are that quantization's "
                     f"values dequantized to {cfg.dtype}, not the original release's weights") if lossy else
                    "the GGUF holds unquantized tensors: the weights are exact",
            "dtype": cfg.dtype,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tie_word_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
            "chat_template": tokenizer.chat_template is not None,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                         "gguf": version("gguf")},
            "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
    if lossy:
        print(f"note: {path.name} is quantized ({', '.join(lossy)}); the imported weights are its dequantized "
              f"values, not the original release's")
    print(f"imported {sum(p.numel() for p in model.parameters()):,} parameters into {out}")
    return out


def _check_reload(model, folder: Path, dtype) -> None:
    """The saved folder must load back to the very same tensors (tied weights included)."""
    import torch
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    saved, loaded = model.state_dict(), again.state_dict()
    if saved.keys() != loaded.keys():
        raise Sm70Error(f"{folder}: the saved model reloads with other tensors "
                        f"({sorted(saved.keys() ^ loaded.keys())[:5]})")
    for name, tensor in saved.items():
        if not torch.equal(tensor, loaded[name]):
            raise Sm70Error(f"{folder}: tensor {name} differs after reload")


def read_provenance(folder: Path) -> dict | None:
    path = Path(folder) / "provenance.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
