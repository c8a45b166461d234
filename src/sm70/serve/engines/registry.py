"""Engines behind the HTTP layer: the embedded transformers engine (default) and vLLM (`make vllm`).
A GGUF is served by llama.cpp's own server, supervised by llama_server.py and reached through the
gateway (main.py), not through this protocol.

The in-process engines answer the same four things: which model ids they serve, the tokenizer and context limit
(to check a prompt before it queues), `submit(prompt_ids, params, model_id)` returning a `Handle`,
and `snapshot()` for /ready. An engine that can die under a live server (vLLM's engine core is a
child process) also answers `problem`: why it cannot answer, which turns /health and /ready to 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sm70.errors import Sm70Error
from sm70.serve.engines.handle import Handle
from sm70.serve.engines.sampling import SamplingParams


@dataclass(frozen=True)
class EngineSpec:
    model: Path
    adapter: Path | None = None
    quant: str = "none"
    dtype: str = "auto"
    served_name: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    max_context: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    threads: int | None = None
    slots: int = 4                    # llama-server: sequences decoded together
    kv_cache_type: str = "f16"        # llama-server: f16, q8_0 or q4_0
    llama_server: Path | None = None  # llama-server: its binary (default: beside this Python, then PATH)
    prompt_cache: bool = False        # llama-server: reuse cached prompt prefixes across requests


class Engine(Protocol):
    model_ids: list[str]
    tokenizer: object
    max_context: int

    def submit(self, prompt_ids: list[int], params: SamplingParams, model_id: str) -> Handle: ...
    def snapshot(self) -> dict: ...
    def close(self) -> None: ...


def served_name(spec: EngineSpec) -> str:
    if spec.served_name:
        return spec.served_name
    return spec.model.name + (f"+{spec.adapter.name}" if spec.adapter else "")


def context_limit(model_config, spec: EngineSpec) -> int:
    native = getattr(model_config, "max_position_embeddings", None) or 2048
    return min(spec.max_context, native) if spec.max_context else native


class EmbeddedEngine:
    """transformers in this process, batched by `Batcher`'s scheduler thread."""

    def __init__(self, spec: EngineSpec):
        from sm70.model.load import load_model, load_tokenizer
        from sm70.serve.engines.batcher import Batcher

        if spec.threads:
            import torch

            # on a shared CPU, torch's spinning worker threads can make a decoding step 30x slower
            torch.set_num_threads(spec.threads)
        self.tokenizer = load_tokenizer(spec.model)
        model = load_model(spec.model, adapter=spec.adapter, quant=spec.quant, dtype=spec.dtype)
        model.eval()
        self.model_ids = [served_name(spec)]
        self.max_context = context_limit(model.config, spec)
        self.batcher = Batcher(model, self.tokenizer, max_batch=spec.max_batch, max_queue=spec.max_queue)

    def submit(self, prompt_ids: list[int], params: SamplingParams, model_id: str) -> Handle:
        return self.batcher.submit(prompt_ids, params)

    def snapshot(self) -> dict:
        return {"engine": "transformers", **self.batcher.snapshot()}

    def close(self) -> None:
        self.batcher.close()


def open_engine(name: str, spec: EngineSpec) -> Engine:
    if name == "transformers":
        return EmbeddedEngine(spec)
    if name == "vllm":
        from sm70.serve.engines.vllm import VllmEngine

        return VllmEngine(spec)
    raise Sm70Error(f"engine: unknown engine {name!r}; use transformers or vllm (llama.cpp runs as llama-server)")
