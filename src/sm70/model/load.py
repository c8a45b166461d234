"""Loading a model the way every stage does: a local directory (or a hub id when online), optionally
in 4-bit NF4 with double quantization, optionally with a LoRA adapter on top.

Train, merge, eval and serve all come through here, so the tiny test model and Llama-2-70B take
the same path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from sm70.errors import Sm70Error

Quant = Literal["none", "nf4"]


def hub_allowed() -> bool:
    """The hub is used only when the operator says so; on-site installs default to offline."""
    return os.environ.get("SM70_ALLOW_HUB", "0") == "1"


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached, or None when it can.

    Asked once before any hub download: without it, huggingface_hub retries a dead network for about
    half a minute per file before failing, which on an isolated hospital network looks like a hang.
    """
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{endpoint.hostname}:{port} cannot be reached ({e})"
    return None


def ensure_offline() -> None:
    """Make transformers/datasets/huggingface_hub fail fast instead of trying the network."""
    if not hub_allowed():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


def resolve_model_path(name: str | Path) -> str:
    """A local directory as is; a hub id only when the hub is allowed, else a clear error."""
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise Sm70Error(f"{path}: not a model directory (no config.json)")
        return str(path)
    if path.exists():
        raise Sm70Error(f"{path}: expected a model directory, found a file")
    if str(name).startswith((".", "/")) or not hub_allowed():
        raise Sm70Error(
            f"model {str(name)!r} is not a local directory and the hub is off (set SM70_ALLOW_HUB=1 on a "
            f"machine with network access, or download it there with `huggingface-cli download {name} "
            f"--local-dir DIR` and pass model=DIR)")
    if (why := hub_unreachable()) is not None:
        raise Sm70Error(f"model {str(name)!r} is not a local directory and the hub is allowed, but {why}; "
                        f"download it where the hub is reachable and pass model=DIR")
    return str(name)


def default_compute_dtype():
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def dtype_from_name(name: str):
    import torch

    if name == "auto":
        return default_compute_dtype()
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise Sm70Error(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None


def nf4_config(compute_dtype, storage_dtype=None):
    """NF4 + double quantization (QLoRA). FSDP needs the 4-bit storage dtype to match the compute
    dtype so that it can flatten quantized and unquantized parameters together."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=storage_dtype or torch.uint8,
    )


def load_tokenizer(name: str | Path):
    from transformers import AutoTokenizer

    ensure_offline()
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token is None:
        # Llama-2 ships without a pad token; padding positions are masked, so reusing EOS is safe.
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str | Path, *, adapter: str | Path | None = None, quant: Quant = "none",
               dtype: str = "auto", device_map=None, storage_dtype=None, trainable_adapter: bool = False):
    """Load a causal LM (optionally NF4) and, if given, a PEFT adapter on top of it.

    `device_map=None` puts an NF4 model on this process's device; `device_map=False` leaves placement to
    the caller (FSDP shards the model itself, so every rank must not load all of it onto its GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    ensure_offline()
    compute_dtype = dtype_from_name(dtype)
    kwargs = {"dtype": compute_dtype}
    if quant == "nf4":
        kwargs["quantization_config"] = nf4_config(compute_dtype, storage_dtype)
        if device_map is None:
            device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
    elif quant != "none":
        raise Sm70Error(f"unknown quantization {quant!r}; use none or nf4")
    if device_map is not None and device_map is not False:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), **kwargs)
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise Sm70Error(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
    return model


def fingerprint(path: str | Path | None) -> str | None:
    """A short, stable identity for a model or adapter directory.

    Whole-file hashes of a 140 GB checkpoint would take minutes, so large weight files contribute
    their name, size and the hash of their first and last MiB; small files are hashed whole.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f.name.startswith("."):
            continue
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if f != path else f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def config_hash(path: str | Path) -> str:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
