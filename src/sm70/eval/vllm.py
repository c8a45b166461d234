"""The vLLM backend of `sm70 eval` (`backend=vllm`): generation and log-likelihood through vLLM's
offline engine, loaded once for both, with the same tasks, prompts and tokenization rules as the HF
backend. The HF model is never loaded: only its tokenizer, which renders and tokenizes the prompts.

Log-likelihoods are vLLM's prompt log-probabilities (`prompt_logprobs`) of the continuation tokens,
each request tokenized by lm-eval's rules (`LmEvalEncoding`). Measured on SmolLM2-135M in float32
(CPU build of vLLM 0.32), per choice, summed over its tokens: within 5e-5 of the HF backend and of
lm-eval (tests/eval/test_vllm_backend.py); in bf16 about 5e-2 per token.
A request longer than the model's context keeps its last `max_model_len` tokens (lm-eval keeps one
token more, which only the longest few-shot prompts ever reach).

vLLM spawns its engine in a child process: a script that builds `VllmModel` at import time must
guard it with `if __name__ == "__main__":` (`sm70 eval` does, through the CLI's entry point).
"""

from __future__ import annotations

import os
from typing import Sequence

from sm70.errors import Sm70Error
from sm70.eval.loglik import LmEvalEncoding, Request


class VllmModel:
    """vLLM's `LLM` over a model directory, the adapter as a `LoRARequest`, and the HF tokenizer."""

    def __init__(self, cfg, tokenizer):  # an EvalConfig, and the HF tokenizer of cfg.model
        from sm70.model.vllm import engine_args

        what = "backend=vllm"
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise Sm70Error(f"{what}: vLLM shards a model itself with tensor_parallel_size=N; run one "
                            f"process, not `accelerate launch` or torchrun")
        args = engine_args(cfg.model, cfg.adapter, quant=cfg.quant, dtype=cfg.dtype,
                           tensor_parallel_size=cfg.tensor_parallel_size, what=what, seed=cfg.seed,
                           enforce_eager=cfg.enforce_eager)
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        self.llm = LLM(**args)
        self.tokenizer = tokenizer
        self.max_length = self.llm.llm_engine.model_config.max_model_len
        self.lora = LoRARequest("adapter", 1, str(cfg.adapter)) if cfg.adapter else None

    def run(self, prompt_ids: list[list[int]], params) -> list:
        return self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params,
                                 lora_request=self.lora, use_tqdm=False)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class VllmScorer(LmEvalEncoding):
    def __init__(self, model: VllmModel):
        tok = model.tokenizer
        self.model = model
        self.prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos_text = tok.decode(self.prefix_token_id)

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self.model.tokenizer.encode(text, add_special_tokens=special)

    def score(self, requests: Sequence[Request], shared_prefix: str = "", progress=None) -> list[list[float]]:
        # shared_prefix needs no handling: prompt log-probabilities are computed whole for each request.
        from vllm import SamplingParams

        encoded = [self.encode_request(r) for r in requests]
        windows = [(enc.context + cont)[-self.model.max_length:] for enc in encoded for cont in enc.continuations]
        # max_tokens=1: vLLM must generate something; prompt_logprobs=0: the prompt's own tokens only.
        outputs = self.model.run(windows, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
        results, k = [], 0
        for enc in encoded:
            scores = []
            for cont in enc.continuations:
                window, logprobs = windows[k], outputs[k].prompt_logprobs
                scores.append(float(sum(logprobs[i][window[i]].logprob
                                        for i in range(len(window) - len(cont), len(window)))))
                k += 1
            results.append(scores)
        if progress is not None:
            progress(len(requests))
        return results


class VllmGenerator:
    """Greedy decoding through vLLM; prompts tokenized and answers decoded as the HF generator does."""

    def __init__(self, model: VllmModel, max_new_tokens: int = 32):
        self.model, self.max_new_tokens = model, max_new_tokens

    def generate(self, prompts: list[str]) -> list[str]:
        from vllm import SamplingParams

        tok = self.model.tokenizer
        # a chat template already wrote BOS into the text; do not add a second one
        ids = [tok.encode(p, add_special_tokens=not (tok.bos_token is not None and p.startswith(tok.bos_token)))
               for p in prompts]
        outputs = self.model.run(ids, SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0))
        return [tok.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outputs]
