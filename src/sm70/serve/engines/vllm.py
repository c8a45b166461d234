"""`engine=vllm`: the same API over vLLM's engine in this process (tensor parallel, LoRA per request).

The base model is served under its name; with `adapter=DIR` the adapter is served as a second model
id, applied per request through vLLM's `LoRARequest` (a client picks it with `"model": "<adapter id>"`).
vLLM's arguments come from `sm70.model.vllm` (the LoRA rank read from the adapter, dtype, quantization).

vLLM runs its engine core in a child process. If that process dies (killed, out of memory, a fault
in a worker) vLLM cannot recover it: every later request fails with `EngineDeadError`. The engine then
reports a `problem`, so /health and /ready answer 503 and requests are refused with the reason, until
the operator (or the service manager that watches /health) restarts the server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from sm70.errors import Sm70Error
from sm70.serve.engines.registry import EngineSpec, context_limit
from sm70.serve.engines.handle import Event, Handle, QueueFull
from sm70.serve.engines.sampling import SamplingParams

log = logging.getLogger("sm70.serve")

DEAD = "the vLLM engine has died (EngineDeadError; the server log has the cause): restart the server"


class VllmEngine:
    def __init__(self, spec: EngineSpec):
        from sm70.model.vllm import engine_args

        if spec.threads is not None:
            raise Sm70Error("engine=vllm: threads= is not passed to vLLM; its CPU build takes its threads from "
                            "VLLM_CPU_OMP_THREADS_BIND")
        args = engine_args(spec.model, spec.adapter, quant=spec.quant, dtype=spec.dtype,
                           tensor_parallel_size=spec.tensor_parallel_size, what="engine=vllm",
                           gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_context,
                           max_num_seqs=spec.max_batch, enforce_eager=spec.enforce_eager)
        from transformers import AutoConfig
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        from sm70.model.load import load_tokenizer

        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**args))
        self.tokenizer = load_tokenizer(spec.model)
        self.max_context = context_limit(AutoConfig.from_pretrained(args["model"]), spec)
        self.model_ids = [spec.served_name or spec.model.name]
        self.lora: dict[str, object] = {}
        if spec.adapter is not None:
            self.model_ids.append(spec.adapter.name)
            self.lora[spec.adapter.name] = LoRARequest(spec.adapter.name, 1, str(spec.adapter))
        self.max_queue = spec.max_queue
        self._ids = itertools.count()
        self._in_flight = 0
        self._reported = False

    @property
    def problem(self) -> str | None:
        """Why this engine cannot answer (shown by /health and /ready), or None."""
        if not self.engine.errored:
            return None
        if not self._reported:
            self._reported = True
            log.error("%s", DEAD)
        return DEAD

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
        except Exception as e:
            # A request's own failure stays with it; a dead engine is reported by `problem` as well.
            log.warning("vllm request %s failed: %s: %s", rid, type(e).__name__, e)
            handle.emit(Event("error", text=self.problem or f"vllm failed: {type(e).__name__}"))
        finally:
            self._in_flight -= 1

    def snapshot(self) -> dict:
        return {"engine": "vllm", "in_flight": self._in_flight}

    def close(self) -> None:
        self.engine.shutdown()
