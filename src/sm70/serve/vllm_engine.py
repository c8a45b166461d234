"""`engine=vllm`: the same API over vLLM, for GPU machines (tensor parallel, LoRA per request).

vLLM is an optional extra (`pip install 'sm70[vllm]'`) and is imported only here. The base model
is served under its name; with `adapter=DIR` the adapter is served as a second model id, applied
per request through vLLM's `LoRARequest` (a client picks it with `"model": "<adapter id>"`).
Not exercised by the CPU test suite: there is no GPU there.
"""

from __future__ import annotations

import asyncio
import itertools

from sm70.errors import Sm70Error
from sm70.serve.engines import EngineSpec, context_limit
from sm70.serve.handle import Event, Handle, QueueFull
from sm70.serve.sampling import SamplingParams


class VllmEngine:
    def __init__(self, spec: EngineSpec):
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise Sm70Error("engine: vllm is not installed; `pip install 'sm70[vllm]'` on a GPU machine, "
                            "or use engine=transformers") from None
        from sm70.model.load import ensure_offline, load_tokenizer, resolve_model_path

        ensure_offline()
        args = AsyncEngineArgs(
            model=resolve_model_path(spec.model), tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_context,
            enable_lora=spec.adapter is not None, max_num_seqs=spec.max_batch,
            quantization="bitsandbytes" if spec.quant == "nf4" else None,
        )
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.tokenizer = load_tokenizer(spec.model)
        from transformers import AutoConfig

        self.max_context = context_limit(AutoConfig.from_pretrained(resolve_model_path(spec.model)), spec)
        base = spec.served_name or spec.model.name
        self.model_ids = [base]
        self.lora: dict[str, object] = {}
        if spec.adapter is not None:
            self.model_ids.append(spec.adapter.name)
            self.lora[spec.adapter.name] = LoRARequest(spec.adapter.name, 1, str(spec.adapter))
        self.max_queue = spec.max_queue
        self._ids = itertools.count()
        self._in_flight = 0

    def submit(self, prompt_ids: list[int], params: SamplingParams, model_id: str) -> Handle:
        from vllm import SamplingParams as VllmParams

        if self._in_flight >= self.max_queue:
            raise QueueFull(f"{self._in_flight} requests in flight (max_queue={self.max_queue})")
        handle = Handle(prompt_ids, params)
        sp = VllmParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                        stop=list(params.stop), seed=params.seed, ignore_eos=params.ignore_eos)
        asyncio.get_running_loop().create_task(self._pump(handle, sp, self.lora.get(model_id)))
        return handle

    async def _pump(self, handle: Handle, sp, lora) -> None:
        rid = f"sm70-{next(self._ids)}"
        self._in_flight += 1
        sent = 0
        try:
            async for out in self.engine.generate({"prompt_token_ids": handle.prompt_ids}, sp, rid,
                                                  lora_request=lora):
                if handle.cancelled.is_set():
                    await self.engine.abort(rid)
                    return
                first = out.outputs[0]
                if len(first.text) > sent:
                    handle.emit(Event("delta", text=first.text[sent:], completion_tokens=len(first.token_ids)))
                    sent = len(first.text)
                if out.finished:
                    handle.emit(Event("done", finish_reason=first.finish_reason or "stop",
                                      prompt_tokens=len(handle.prompt_ids),
                                      completion_tokens=len(first.token_ids)))
        except Exception as e:  # reported to this request only; the engine stays up
            handle.emit(Event("error", text=f"vllm failed: {type(e).__name__}"))
        finally:
            self._in_flight -= 1

    def snapshot(self) -> dict:
        return {"engine": "vllm", "in_flight": self._in_flight}

    def close(self) -> None:
        self.engine.shutdown()
