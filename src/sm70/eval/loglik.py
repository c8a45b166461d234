"""Log-likelihood of answer continuations, tokenized exactly as lm-evaluation-harness 0.4.x (HFLM)
does it, and computed once per shared prefix.

Tokenization (lm-eval `TemplateLM._encode_pair` + `HFLM.tok_encode`): trailing spaces of the context
move to the continuation; the context is encoded alone and the continuation is whatever follows
those tokens in the encoding of context + continuation. The model then reads context tokens +
continuation tokens, so every choice of an item shares the same context tokens and the item's
prompt can be computed once and its key/value cache reused for each choice.

A fixed few-shot block is shared across items only where each item's context tokens start with
exactly the block's tokens (a BPE merge across the boundary would change them); other items are
scored without it. Requests longer than the model's context (and every request on attention
kernels that take no custom mask, such as flash-attention) are scored the unshared way, with
lm-eval's left truncation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from sm70.model.head import output_layer_off

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer says


@dataclass(frozen=True)
class Request:
    context: str                      # the whole prompt, shared prefix included
    continuations: tuple[str, ...]    # one per choice, each starting with the target delimiter


@dataclass(frozen=True)
class Encoded:
    context: list[int]
    continuations: list[list[int]]


def resolve_max_length(config, tokenizer) -> int:
    """lm-eval's `resolve_max_length`: text_config, then config, then tokenizer, then 2048."""
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int):
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000_000:
        return limit
    return DEFAULT_MAX_LENGTH


class LmEvalEncoding:
    """lm-eval's tokenization rules over any tokenizer: a subclass sets `prefix_token_id` and
    `bos_text` and says how to tokenize (`tokenize(text, special)`: with or without the tokenizer's
    own special tokens). The HF scorer and the llama.cpp scorer share them, so both read the same ids."""

    prefix_token_id: int
    bos_text: str

    def tokenize(self, text: str, special: bool) -> list[int]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        # HFLM.tok_encode: the tokenizer's own special tokens, unless the text already starts with BOS.
        return self.tokenize(text, special=not text.startswith(self.bos_text))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tokenize(continuation, special=False)
            if cont[0] != self.prefix_token_id:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_enc = self.encode(context)
        whole = self.encode(context + continuation)
        return context_enc, whole[len(context_enc):]

    def encode_request(self, request: Request) -> Encoded:
        pairs = [self.encode_pair(request.context, c) for c in request.continuations]
        # Every choice is scored after the same context tokens (the split depends on the context only).
        return Encoded(pairs[0][0], [cont for _, cont in pairs])


class LoglikScorer(LmEvalEncoding):
    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.max_length = max_length or resolve_max_length(model.config, tokenizer)
        self.prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.bos_text = tokenizer.decode(self.prefix_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats = {"shared_items": 0, "unshared_items": 0, "prefix_tokens": 0}
        self._prefix: tuple[list[int], list] | None = None  # the last shared prefix and its key/values

    def tokenize(self, text: str, special: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=special)

    # ---- scoring ----

    def score(self, requests: Sequence[Request], shared_prefix: str = "", progress=None) -> list[list[float]]:
        """Summed log-likelihood of each continuation of each request, in request and choice order.
        `progress(n)` is called as each batch of n requests is done (the progress bar)."""
        import torch

        encoded = [self.encode_request(r) for r in requests]
        prefix = self.encode(shared_prefix.rstrip()) if shared_prefix.strip() else []
        results: list[list[float] | None] = [None] * len(encoded)
        shared, alone, too_long = [], [], []
        # The packed choices need a custom 4D mask, which the sdpa and eager attention kernels take.
        packable = getattr(self.model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        for i, enc in enumerate(encoded):
            longest = len(enc.context) + max(len(c) for c in enc.continuations)
            if longest > self.max_length + 1 or not packable:
                too_long.append(i)
            elif prefix and len(enc.context) > len(prefix) and enc.context[:len(prefix)] == prefix:
                shared.append(i)
            else:
                alone.append(i)
        self.stats["shared_items"] += len(shared)
        self.stats["unshared_items"] += len(alone) + len(too_long)
        with torch.inference_mode():
            if shared:
                prefix_kv = self.prefix_cache(prefix)
                for batch in self.batches(shared, encoded):
                    for i, lls in zip(batch, self.score_batch([encoded[i] for i in batch], prefix_kv, len(prefix))):
                        results[i] = lls
                    if progress is not None:
                        progress(len(batch))
            for batch in self.batches(alone, encoded):
                for i, lls in zip(batch, self.score_batch([encoded[i] for i in batch], None, 0)):
                    results[i] = lls
                if progress is not None:
                    progress(len(batch))
            for i in too_long:
                results[i] = self.score_unshared([(encoded[i].context, c) for c in encoded[i].continuations])
                if progress is not None:
                    progress(1)
        return results  # type: ignore[return-value]

    def batches(self, indices: list[int], encoded: list[Encoded]) -> Iterable[list[int]]:
        # Longest first, like lm-eval, so padding stays small and memory peaks at once.
        order = sorted(indices, key=lambda i: -len(encoded[i].context))
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]

    def prefix_cache(self, prefix: list[int]):
        """Key/values of the shared prefix, computed once for every batch and call that shares it."""
        import torch

        if self._prefix is None or self._prefix[0] != prefix:
            with output_layer_off(self.model):  # only its key/values are needed, no logits
                out = self.model(input_ids=torch.tensor([prefix], device=self.model.device), use_cache=True)
            self._prefix = (prefix, [(layer.keys, layer.values) for layer in out.cache.layers])
            self.stats["prefix_tokens"] += len(prefix)
        return self._prefix[1]

    def score_batch(self, batch: list[Encoded], prefix_kv, p: int) -> list[list[float]]:
        """One forward for a batch of items: each row holds an item's context (after the shared prefix)
        followed by all its choices' tokens, with a tree-shaped mask so that every choice sees the
        context and its own earlier tokens only, at the positions it would have in its own sequence."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        rows, spans = [], []  # spans[i]: (start, continuation) of each choice within row i
        for enc in batch:
            row, marks = list(enc.context[p:]), []
            for cont in enc.continuations:
                marks.append((len(row), cont))
                row += cont[:-1]  # the last token is predicted, never read
            rows.append(row)
            spans.append(marks)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=device)
        positions = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        allowed = torch.zeros((len(rows), width, p + width), dtype=torch.bool, device=device)
        allowed[:, :, :p] = True
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        for i, (enc, row, marks) in enumerate(zip(batch, rows, spans)):
            n = len(enc.context) - p
            ids[i, :len(row)] = torch.tensor(row, device=device)
            positions[i, :n] = p + torch.arange(n, device=device)
            allowed[i, :n, p:p + n] = causal[:n, :n]
            for start, cont in marks:
                k = len(cont) - 1
                positions[i, start:start + k] = p + n + torch.arange(k, device=device)
                allowed[i, start:start + k, p:p + n] = True
                allowed[i, start:start + k, p + start:p + start + k] = causal[:k, :k]
            idle = torch.arange(len(row), width, device=device)
            allowed[i, idle, p + idle] = True  # padding attends to itself, so no row of the mask is empty
        mask = allowed[:, None]
        if self.model.config._attn_implementation == "eager":
            mask = torch.zeros(mask.shape, dtype=self.model.dtype, device=device).masked_fill(
                ~mask, torch.finfo(self.model.dtype).min)
        cache = DynamicCache(ddp_cache_data=[(k.expand(len(batch), -1, -1, -1), v.expand(len(batch), -1, -1, -1))
                                             for k, v in prefix_kv]) if prefix_kv else None
        # Logits only where a choice's token is predicted: the context's other positions need none.
        with output_layer_off(self.model) as head:
            hidden = self.model(input_ids=ids, cache=cache, attention_mask=mask, position_ids=positions).logits
        wanted: list[tuple[int, int, int]] = []  # (row, position, token) for every scored token
        for i, (enc, marks) in enumerate(zip(batch, spans)):
            last = len(enc.context) - p - 1
            for start, cont in marks:
                # Token 0 is predicted by the context's last position, token t by the choice's token t-1.
                wanted += [(i, pos, tok) for pos, tok in zip([last, *range(start, start + len(cont) - 1)], cont)]
        rows_at = torch.tensor([w[0] for w in wanted], device=device)
        positions_at = torch.tensor([w[1] for w in wanted], device=device)
        tokens = torch.tensor([w[2] for w in wanted], device=device)
        logprobs = torch.log_softmax(head(hidden[rows_at, positions_at]).float(), dim=-1)
        picked = logprobs[torch.arange(len(wanted), device=device), tokens].tolist()
        results: list[list[float]] = []
        k = 0
        for marks in spans:
            scores = []
            for _, cont in marks:
                scores.append(float(sum(picked[k:k + len(cont)])))
                k += len(cont)
            results.append(scores)
        return results

    def score_unshared(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """lm-eval's own computation: each (context, continuation) run whole, right-padded, truncated
        from the left to the model's length. The reference that prefix sharing must reproduce."""
        import torch

        scores = []
        device = self.model.device
        with torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                inps = [(ctx + cont)[-(self.max_length + 1):][:-1] for ctx, cont in chunk]
                width = max(len(x) for x in inps)
                ids = torch.tensor([x + [self.pad_id] * (width - len(x)) for x in inps], device=device)
                logprobs = torch.log_softmax(self.model(input_ids=ids).logits.float(), dim=-1)
                for row, (inp, (_, cont)) in enumerate(zip(inps, chunk)):
                    span = logprobs[row, len(inp) - len(cont):len(inp)]
                    scores.append(float(span[torch.arange(len(cont)), torch.tensor(cont, device=device)].sum()))
        return scores

    def score_requests_unshared(self, requests: Sequence[Request]) -> list[list[float]]:
        encoded = [self.encode_request(r) for r in requests]
        flat = self.score_unshared([(e.context, c) for e in encoded for c in e.continuations])
        out, k = [], 0
        for e in encoded:
            out.append(flat[k:k + len(e.continuations)])
            k += len(e.continuations)
        return out
