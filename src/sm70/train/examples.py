"""Training examples: `{id, source, prompt, completion}` rows from the data stage, tokenized with a
per-token loss mask so that only the completion is learned (the prompt is context, not target)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sm70.errors import Sm70Error
from sm70.jsonl import read_jsonl

IGNORE = -100  # label value that transformers' causal-LM loss skips


@dataclass(frozen=True)
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens (or nowhere, when completion_only is off)

    def __len__(self) -> int:
        return len(self.input_ids)


def read_rows(path: Path, allow_empty: bool = False) -> list[dict]:
    """Every row of a data-stage jsonl file; a malformed row is an error naming file, line and field.
    `allow_empty` is for val.jsonl: a data build with `val_fraction: 0` writes it empty on purpose."""
    if not path.is_file():
        raise Sm70Error(f"{path}: not found (run `sm70 data build` first, or point data= at its output)")
    rows = []
    for lineno, row in read_jsonl(path):
        for field in ("prompt", "completion"):
            if not isinstance(row.get(field), str):
                raise Sm70Error(f"{path}:{lineno}: {field}: missing or not a string")
        if not row["completion"]:
            raise Sm70Error(f"{path}:{lineno}: completion: empty, nothing to learn")
        row.setdefault("id", f"{path.name}:{lineno}")
        rows.append(row)
    if not rows and not allow_empty:
        raise Sm70Error(f"{path}: no rows")
    return rows


def tokenize(rows: list[dict], tokenizer, max_length: int, completion_only: bool = True) -> tuple[list[Example], int]:
    """Tokenize prompt and completion separately (as evaluation scores them) and append EOS.

    Over-long rows are truncated, never dropped: from the right, or, when that would cut the whole
    completion, from the left of the prompt so that at least part of the answer stays a target.
    Returns the examples and how many were truncated.
    """
    truncated = 0
    examples = []
    prompts = encode_prompts([r["prompt"] for r in rows], tokenizer)
    completions = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
    for row, prompt, completion in zip(rows, prompts, completions):
        completion = completion + [tokenizer.eos_token_id]
        if len(prompt) + len(completion) > max_length:
            truncated += 1
            keep = min(len(completion), max_length // 2)
            if len(prompt) + keep > max_length:  # the prompt alone fills the window: keep its start and end
                head = prompt[:1]
                prompt = head + prompt[len(prompt) - (max_length - keep - len(head)):]
            completion = completion[: max_length - len(prompt)]
        ids = prompt + completion
        # The first token is never a target: unpacked, nothing precedes it; packed, the previous
        # example precedes it and must not teach the model to predict across the boundary.
        labels = ([IGNORE] * len(prompt) + completion) if completion_only else [IGNORE] + ids[1:]
        examples.append(Example(str(row["id"]), ids, labels))
    return examples, truncated


def encode_prompts(prompts: list[str], tokenizer) -> list[list[int]]:
    """The tokenizer's own special tokens, except where a chat template already wrote BOS into the
    text (Llama-2's `<s>[INST]`): as evaluation (lm-eval's rule), serving and llama.cpp read it,
    so a fine-tune never learns after a doubled BOS that no deployment sends."""
    bos = tokenizer.bos_token
    has_bos = [bool(bos) and p.startswith(bos) for p in prompts]
    ids: list[list[int]] = [[] for _ in prompts]
    for flag in (True, False):
        picked = [i for i, h in enumerate(has_bos) if h == flag]
        if picked:
            encoded = tokenizer([prompts[i] for i in picked], add_special_tokens=not flag)["input_ids"]
            for i, e in zip(picked, encoded):
                ids[i] = e
    return ids


def spread(rows: list, n: int) -> list:
    """At most `n` rows taken at even intervals: val.jsonl is written source by source, so the first n
    rows would be one source's."""
    if len(rows) <= n:
        return rows
    return [rows[i * len(rows) // n] for i in range(n)]
