"""The llama.cpp backend of `sm70 eval` (`backend=llama.cpp model=FILE.gguf`): any GGUF, ours or one
downloaded, scored with the same tasks, prompts, tokenization rules and statistics as the HF backend.

Prompts are rendered by the HF tokenizer transformers rebuilds from the GGUF's own metadata (its
chat template goes through the same Jinja engine as the HF backend's); tokens and logits come from
llama.cpp. With an F32 GGUF and an F32 key/value cache (`kv_cache=f32`, the default here) the
log-likelihoods equal the HF backend's to ~1e-4; llama.cpp's default F16 cache moves them ~0.02.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sm70.errors import Sm70Error
from sm70.eval.loglik import LmEvalEncoding, Request

KV_TYPES = {"f32": 0, "f16": 1}  # ggml type ids of the key/value cache
MAX_CONTEXT = 4096               # logits for every position of the window are kept: n_ctx x vocab floats


def gguf_path(model: str) -> Path:
    path = Path(model)
    if path.suffix != ".gguf" or not path.is_file():
        raise Sm70Error(f"backend=llama.cpp: model={model} must be a .gguf file")
    return path


def trained_context(path: Path) -> int:
    import gguf

    fields = gguf.GGUFReader(str(path)).fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else "llama"
    field = fields.get(f"{arch}.context_length")
    return int(field.contents()) if field is not None else 2048


class GgufModel:
    """One llama.cpp context over a GGUF, with logits kept for every position (scoring needs them)."""

    def __init__(self, model: str, threads: int | None = None, kv_cache: str = "f32", n_ctx: int | None = None):
        from sm70.export.llamacpp import require

        llama_cpp = require()
        self.path = gguf_path(model)
        self.n_ctx = n_ctx or min(trained_context(self.path), MAX_CONTEXT)
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_batch=512, logits_all=True,
                                   n_threads=threads, n_threads_batch=threads, type_k=KV_TYPES[kv_cache],
                                   type_v=KV_TYPES[kv_cache], verbose=False)

    def tokenize(self, text: str, special: bool) -> list[int]:
        # special=True in llama.cpp parses special-token text (<|im_start|>) as HF tokenizers always do;
        # add_bos adds the model's BOS only where its vocabulary says so, like add_special_tokens.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=special, special=True)

    def logits_for(self, tokens: list[int]) -> np.ndarray:
        """Logits after each of `tokens`, reusing the cached keys/values of the longest prefix shared
        with the previous call (an item's context, for each of its choices)."""
        llm = self.llm
        cached = llm.input_ids[:llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        if common == len(tokens):  # nothing new: the logits of these positions are already kept
            common -= 1
        llm.n_tokens = common
        llm.eval(tokens[common:])
        return llm.scores[:len(tokens)]

    def close(self) -> None:
        self.llm.close()


def hf_tokenizer(path: Path):
    """The HF tokenizer of a GGUF, rebuilt by transformers from the file (vocabulary, special tokens,
    chat template): prompts are rendered by the same code as the HF backend's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


class LlamaCppScorer(LmEvalEncoding):
    def __init__(self, model: GgufModel):
        llm = model.llm
        self.model = model
        bos = llm.token_bos()
        self.prefix_token_id = bos if bos >= 0 else llm.token_eos()
        self.bos_text = llm.detokenize([self.prefix_token_id], special=True).decode("utf-8", "replace")
        self.max_length = model.n_ctx - 1

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self.model.tokenize(text, special)

    def score(self, requests: Sequence[Request], shared_prefix: str = "", progress=None) -> list[list[float]]:
        # shared_prefix needs no handling: the key/value reuse of `logits_for` covers any common start.
        results = []
        for request in requests:
            enc = self.encode_request(request)
            scores = []
            for cont in enc.continuations:
                # lm-eval's window: the last max_length+1 tokens, the final one only predicted.
                inp = (enc.context + cont)[-(self.max_length + 1):][:-1]
                logits = self.model.logits_for(inp)[len(inp) - len(cont):len(inp)].astype(np.float64)
                logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
                scores.append(float(logprobs[np.arange(len(cont)), cont].sum()))
            results.append(scores)
            if progress is not None:
                progress(1)
        return results


class LlamaCppGenerator:
    """Greedy decoding through llama.cpp, ending at the model's end-of-generation token."""

    def __init__(self, model: GgufModel, tokenizer, max_new_tokens: int = 32):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens

    def generate(self, prompts: list[str]) -> list[str]:
        texts = []
        bos = self.tokenizer.bos_token
        for prompt in prompts:
            # as the HF generator: a chat template already wrote BOS into the text
            ids = self.model.tokenize(prompt, special=not (bos is not None and prompt.startswith(bos)))
            self.model.llm.reset()
            out = self.model.llm.create_completion(ids, max_tokens=self.max_new_tokens, temperature=0.0, top_k=1)
            texts.append(out["choices"][0]["text"])
        return texts
