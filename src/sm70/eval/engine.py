"""Scoring items: prompts (few-shot block, template), then log-likelihood or generation, one result
row per item in the layout of `predictions.jsonl`; the model is loaded once for all tasks."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence

from sm70 import render
from sm70.eval.cache import ResultCache
from sm70.eval.loglik import LoglikScorer, Request
from sm70.eval.tasks import Item, Task, continuations, fewshot_block, question_text

COT_INSTRUCTION = " Think step by step, then end with 'Answer: ' and your answer."


@dataclass(frozen=True)
class Setting:
    mode: str = "loglik"           # loglik | generate
    prompt: str = "lm-eval"        # lm-eval | option-text
    template: str = "none"         # none | plain | alpaca | medalpaca | chat
    instruction: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 32
    cot: bool = False


def build_context(task: Task, item: Item, shots: Sequence[Item], setting: Setting, tokenizer=None) -> str:
    text = fewshot_block(task, shots, setting.prompt) + question_text(task, item)
    if setting.template == "none":
        return text
    instruction = setting.instruction or render.INSTRUCTIONS[task.layout]
    if setting.mode == "generate" and setting.cot:
        instruction += COT_INSTRUCTION
    return render.apply_template(setting.template, instruction, text, tokenizer=tokenizer)


def shared_prefix(contexts: Sequence[str]) -> str:
    """The text every context starts with, cut back to a line break so it ends on a token boundary in
    practice (the scorer still checks the tokens and scores an item unshared where they differ)."""
    if len(contexts) < 2:
        return ""
    common = os.path.commonprefix(list(contexts))
    return common[:common.rfind("\n") + 1] if "\n" in common else ""


def argmax(values: Sequence[float]) -> int:
    # First maximum, like numpy.argmax in lm-eval.
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_loglik(scorer: LoglikScorer, task: Task, name: str, items: Sequence[Item], contexts: Sequence[str],
                 style: str, prefix: str, progress=None) -> list[dict]:
    conts = [continuations(task, item, style) for item in items]
    logliks = scorer.score([Request(ctx, tuple(c)) for ctx, c in zip(contexts, conts)], shared_prefix=prefix,
                           progress=progress)
    rows = []
    for item, cont, lls in zip(items, conts, logliks):
        keys = list(item.options)
        # lm-eval's acc_norm divides by the length in characters of the choice without the delimiter.
        lengths = [len(c) - len(render.TARGET_DELIMITER) for c in cont]
        pred, pred_norm = keys[argmax(lls)], keys[argmax([ll / n for ll, n in zip(lls, lengths)])]
        rows.append({"task": name, "id": item.id, "gold": item.gold, "prediction": pred,
                     "correct": pred == item.gold, "logliks": lls, "pred_norm": pred_norm,
                     "correct_norm": pred_norm == item.gold})
    return rows


def score_generate(generator, name: str, items: Sequence[Item], contexts: Sequence[str]) -> list[dict]:
    from sm70.eval.extract import extract_answer

    texts = generator.generate(list(contexts))
    rows = []
    for item, text in zip(items, texts):
        extracted = extract_answer(text, item.options)
        rows.append({"task": name, "id": item.id, "gold": item.gold, "prediction": extracted,
                     "correct": extracted == item.gold, "text": text, "extracted": extracted})
    return rows


class Scorer:
    """The model, loaded once for all tasks, and the scoring loop with its cache writes."""

    def __init__(self, cfg):  # an EvalConfig
        self.cfg = cfg
        self._model = self._tokenizer = self._generator = self._loglik = None
        self.device = None
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # started by `accelerate launch` or torchrun
            import torch
            import torch.distributed as dist

            cuda = torch.cuda.is_available()
            if not dist.is_initialized():
                dist.init_process_group("nccl" if cuda else "gloo")
            self.device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if cuda else "cpu"

    def load(self):
        if self._model is None and self.cfg.backend == "llama.cpp":
            from sm70.eval.llamacpp import GgufModel

            self._model = GgufModel(self.cfg.model, threads=self.cfg.threads, kv_cache=self.cfg.kv_cache)
        elif self._model is None and self.cfg.backend == "vllm":
            from sm70.eval.vllm import VllmModel

            self._model = VllmModel(self.cfg, self.tokenizer())
        elif self._model is None:
            from sm70.model.load import load_model

            device_map = {"": self.device} if self.device is not None else None
            self._model = load_model(self.cfg.model, adapter=self.cfg.adapter, quant=self.cfg.quant,
                                     dtype=self.cfg.dtype, device_map=device_map)
            self._model.eval()
        return self._model, self.tokenizer()

    def tokenizer(self):
        from sm70.model.load import load_tokenizer

        if self._tokenizer is None and self.cfg.backend == "llama.cpp":
            from sm70.eval.llamacpp import gguf_path, hf_tokenizer

            self._tokenizer = hf_tokenizer(gguf_path(self.cfg.model))
        elif self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.model)
        return self._tokenizer

    def run(self, task: Task, name: str, items: list[Item], shots: list[Item], setting, cache: ResultCache,
            chunk_items: int) -> None:
        if not items:
            return
        from tqdm.auto import tqdm

        contexts = [build_context(task, item, shots, setting, self.tokenizer()) for item in items]
        prefix = shared_prefix(contexts)
        step = max(1, chunk_items)
        # One bar per task (items scored, rate, ETA); the first process draws it for all of them.
        with tqdm(total=len(items), desc=name, unit="item", file=sys.stderr, dynamic_ncols=True,
                  disable=int(os.environ.get("RANK", 0)) != 0) as bar:
            for start in range(0, len(items), step):
                chunk, ctx = items[start:start + step], contexts[start:start + step]
                if setting.mode == "loglik":  # the bar moves with each batch
                    rows = score_loglik(self.loglik(), task, name, chunk, ctx, setting.prompt, prefix, bar.update)
                else:
                    rows = score_generate(self.generator(setting), name, chunk, ctx)
                    bar.update(len(chunk))
                cache.append(rows)

    def loglik(self):
        if self._loglik is None and self.cfg.backend == "llama.cpp":
            from sm70.eval.llamacpp import LlamaCppScorer

            self._loglik = LlamaCppScorer(self.load()[0])
        elif self._loglik is None and self.cfg.backend == "vllm":
            from sm70.eval.vllm import VllmScorer

            self._loglik = VllmScorer(self.load()[0])
        elif self._loglik is None:
            self._loglik = LoglikScorer(*self.load(), batch_size=self.cfg.batch_size)
        return self._loglik

    def generator(self, setting):
        from sm70.eval.generate import HFGenerator

        if self._generator is None or self._generator.max_new_tokens != setting.max_new_tokens:
            if self.cfg.backend == "vllm":
                from sm70.eval.vllm import VllmGenerator

                self._generator = VllmGenerator(self.load()[0], max_new_tokens=setting.max_new_tokens)
            elif self.cfg.backend == "llama.cpp":
                from sm70.eval.llamacpp import LlamaCppGenerator

                self._generator = LlamaCppGenerator(*self.load(), max_new_tokens=setting.max_new_tokens)
            else:
                self._generator = HFGenerator(*self.load(), max_new_tokens=setting.max_new_tokens,
                                              batch_size=self.cfg.batch_size)
        return self._generator

    def close(self) -> None:
        if self.cfg.backend in ("llama.cpp", "vllm") and self._model is not None:
            self._model.close()
        if self.device is not None:
            import torch.distributed as dist

            dist.destroy_process_group()

    def barrier(self) -> None:
        """Every process has written its shard to the cache before rank 0 reads them all."""
        if self.device is not None:
            import torch.distributed as dist

            dist.barrier()
