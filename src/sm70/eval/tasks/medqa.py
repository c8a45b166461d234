"""MedQA-USMLE, 4-option test (1,273 items). Two layouts are read: the original JSONL
(`question`, `options{A..D}`, `answer_idx`) and the GBaker hub layout (`sent1`, `ending0..3`, `label`),
which lm-eval's `medqa_4options` reads. An item's id is its row index in the file."""

from __future__ import annotations

from pathlib import Path

from sm70.errors import Sm70Error
from sm70.eval.tasks.item import Item
from sm70.eval.tasks.source import field, unscorable
from sm70.jsonl import read_jsonl
from sm70.samples import sample_path
from sm70.textfile import InputError

# A folder holds one file per split; the original release names its 4-option test file this way.
SPLIT_FILES = {"test": ("test.jsonl", "phrases_no_exclude_test.jsonl"),
               "train": ("train.jsonl", "phrases_no_exclude_train.jsonl"),
               "dev": ("dev.jsonl", "validation.jsonl", "phrases_no_exclude_dev.jsonl")}
LETTERS = "ABCDEFGHIJ"


def resolve(path: Path | None, split: str) -> Path:
    folder = sample_path("medqa") if path is None else path
    if folder.is_file():
        return folder
    if split not in SPLIT_FILES:
        raise Sm70Error(f"medqa: split: unknown split {split!r}; use {', '.join(SPLIT_FILES)}")
    for name in SPLIT_FILES[split]:
        if (folder / name).is_file():
            return folder / name
    raise Sm70Error(f"{folder}: no MedQA {split} file (looked for {', '.join(SPLIT_FILES[split])})")


def parse(row: dict, where: str) -> tuple[str, dict[str, str], str]:
    if "sent1" in row:  # GBaker/MedQA-USMLE-4-options-hf
        question = field(row, "sent1", str, where)
        endings = sorted(k for k in row if k.startswith("ending"))
        if len(endings) > len(LETTERS):
            raise InputError(where, f"{len(endings)} endings; at most {len(LETTERS)} options are read", "ending*")
        options = {LETTERS[i]: field(row, f"ending{i}", str, where) for i in range(len(endings))}
        label = field(row, "label", int, where)
        if not 0 <= label < len(options):
            raise InputError(where, f"{label} is not an index of the {len(options)} endings", "label")
        return question, options, LETTERS[label]
    question = field(row, "question", str, where)
    options = field(row, "options", dict, where)
    for key in options:
        field(options, key, str, where, f"options.{key}")
    gold = field(row, "answer_idx", str, where)
    if gold not in options:
        raise InputError(where, f"{gold!r} is not one of the options {list(options)}", "answer_idx")
    return question, dict(options), gold


def load(path: Path | None = None, split: str = "test") -> list[Item]:
    file = resolve(path, split)
    items = []
    for index, (lineno, row) in enumerate(read_jsonl(file, unique_keys=True)):
        question, options, gold = parse(row, f"{file}:{lineno}")
        items.append(Item(id=str(index), question=question, options=options, gold=gold,
                          excluded=unscorable(question, options),
                          meta={"meta_info": row["meta_info"]} if "meta_info" in row else {}))
    if not items:
        raise InputError(str(file), "no questions (the file has no rows)")
    return items
