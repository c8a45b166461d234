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
from sm70.offline import ensure_offline, hub_allowed  # noqa: F401  (fetch, data sources and engines ask here)

Quant = Literal["none", "nf4"]


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


def resolve_model_path(name: str | Path) -> str:
    """A local directory as is; a hub id only when the hub is allowed, else a clear error."""
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise Sm70Error(f"{path}: not a model directory (no config.json)")
        check_model_dir(path)
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
    """bf16 on a GPU that computes in it natively (Ampere and later), fp16 on older GPUs (T4, V100: bf16
    there is emulated, several times slower; QLoRA's fp16 setting), fp32 on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


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

    `device_map=None` puts the model on this process's GPU when there is one (NF4 or not; an NF4 model on
    the CPU otherwise); `device_map=False` leaves placement to the caller (FSDP shards the model itself);
    `{"": "cpu"}` keeps it on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    ensure_offline()
    compute_dtype = dtype_from_name(dtype)
    kwargs = {"dtype": compute_dtype}
    if quant == "nf4":
        kwargs["quantization_config"] = nf4_config(compute_dtype, storage_dtype)
    elif quant != "none":
        raise Sm70Error(f"unknown quantization {quant!r}; use none or nf4")
    if device_map is None and torch.cuda.is_available():
        device_map = {"": torch.cuda.current_device()}
    elif device_map is None and quant == "nf4":
        device_map = {"": "cpu"}
    if device_map is not None and device_map is not False:
        kwargs["device_map"] = device_map
    model_path = resolve_model_path(name)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise Sm70Error(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
        check_adapter_dir(adapter, Path(model_path))
        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
        except RuntimeError as e:  # what the checks above cannot see: a tensor of another shape
            if "size mismatch" not in str(e):
                raise
            raise Sm70Error(f"{adapter}: this adapter does not fit base model {name}: {str(e)[:500]}") from None
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


# ---- checks on the directories people hand us, before transformers or PEFT read them ----
# Without them, a truncated download or an adapter for another base fails deep inside those
# libraries with a traceback that does not say which file is wrong.

ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size",
                     "num_attention_heads", "num_key_value_heads")
SAFETENSORS_HEADER_LIMIT = 100 << 20  # the safetensors format's own limit on the JSON header


def _json_object(file: Path) -> dict:
    from sm70.textfile import InputError, read_json

    value = read_json(file, limit=64 << 20)
    if not isinstance(value, dict):
        raise InputError(str(file), f"expected a JSON object, got {type(value).__name__}")
    return value


def check_model_dir(path: Path) -> None:
    """config.json is a JSON object; every weight file the index names exists; no safetensors file is cut short."""
    from sm70.textfile import InputError

    _json_object(path / "config.json")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise InputError(str(index), "expected an object of tensor name -> file", "weight_map")
        missing = sorted({f for f in weight_map.values() if not isinstance(f, str) or not (path / f).is_file()},
                         key=str)
        if missing:
            raise InputError(str(index), f"names weight files that are not in {path}: {missing[:5]}", "weight_map")
    for file in sorted(path.glob("*.safetensors")):
        safetensors_header(file)


def safetensors_header(file: Path) -> dict:
    """The header of a safetensors file, checked against the file's size: a truncated copy is named
    here instead of failing as a deserialization error inside the loader."""
    from sm70.textfile import InputError, json_problem, open_binary, parse_json

    size = file.stat().st_size
    with open_binary(file) as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else None
        if length is None or length > SAFETENSORS_HEADER_LIMIT or 8 + length > size:
            raise InputError(str(file), f"truncated or not a safetensors file ({size:,} bytes; the header "
                             f"length says {length})")
        try:
            header = parse_json(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise InputError(str(file), "not a safetensors file: the header is not JSON "
                             f"({json_problem(e) if isinstance(e, ValueError) else e})") from None
    if not isinstance(header, dict):
        raise InputError(str(file), "not a safetensors file: the header is not a JSON object")
    offsets = [t.get("data_offsets") for name, t in header.items() if name != "__metadata__"]
    if not all(isinstance(o, list) and len(o) == 2 and all(type(x) is int for x in o) for o in offsets):
        raise InputError(str(file), "not a safetensors file: a tensor's data_offsets are not two integers")
    need = 8 + length + max((end for _, end in offsets), default=0)
    if need > size:
        raise InputError(str(file), f"truncated: its header describes {need:,} bytes, the file has {size:,} "
                         "(an interrupted download or copy?)")
    return header


def check_adapter_dir(adapter: Path, base: Path | None) -> None:
    """The adapter's files are whole, and it was trained for this base: its recorded base model has
    the same architecture, and its LoRA matrices fit this base's layer count and hidden size."""
    from sm70.textfile import InputError

    config = _json_object(adapter / "adapter_config.json")
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file() and not (adapter / "adapter_model.bin").is_file():
        raise InputError(str(adapter), "no adapter weights (adapter_model.safetensors)")
    if base is None or not (base / "config.json").is_file():
        return  # a hub id: nothing local to compare against
    base_cfg = _json_object(base / "config.json")
    recorded = config.get("base_model_name_or_path")
    if isinstance(recorded, str) and (Path(recorded) / "config.json").is_file():
        trained = _json_object(Path(recorded) / "config.json")
        for key in ARCHITECTURE_KEYS:
            if key in trained and key in base_cfg and trained[key] != base_cfg[key]:
                raise InputError(str(adapter / "adapter_config.json"), f"the adapter was trained for {recorded} "
                                 f"({key}={trained[key]}), but the base model {base} has {key}={base_cfg[key]}",
                                 "base_model_name_or_path")
    if weights.is_file():
        _check_lora_shapes(weights, safetensors_header(weights), base, base_cfg)


def _check_lora_shapes(weights: Path, header: dict, base: Path, base_cfg: dict) -> None:
    import re

    from sm70.textfile import InputError

    layers, hidden = base_cfg.get("num_hidden_layers"), base_cfg.get("hidden_size")
    for name, tensor in header.items():
        if not isinstance(tensor, dict):
            continue
        layer = re.search(r"\.layers\.(\d+)\.", name)
        if isinstance(layers, int) and layer and int(layer.group(1)) >= layers:
            raise InputError(str(weights), f"tensor {name} is for layer {layer.group(1)}, but the base model {base} "
                             f"has {layers} layers: the adapter was trained for another base model")
        shape = tensor.get("shape")
        # lora_A of an attention input projection reads the hidden state: its second dimension is hidden_size.
        if (isinstance(hidden, int) and re.search(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.lora_A\b", name)
                and isinstance(shape, list) and len(shape) == 2 and shape[1] != hidden):
            raise InputError(str(weights), f"tensor {name} has shape {shape}, but the base model {base} has "
                             f"hidden_size {hidden}: the adapter was trained for another base model")
