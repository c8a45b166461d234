"""A source row -> one training example: prompt + completion, through the shared renderer.

Alpaca rows (Medical Meadow) go through a named instruction template. Benchmark-format rows
(MedQA/USMLE multiple choice, PubMedQA) are rendered exactly as the evaluation stage renders them
(`sm70.render`), with the gold answer as the completion; with template `plain` and an empty
instruction the prompt is byte-identical to lm-evaluation-harness's prompt for that item.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from sm70 import render
from sm70.data.clean import clean_text
from sm70.data.config import ALPACA_FIELDS, SourceConfig

# The evaluation's own instructions (sm70.render), so a row built from a benchmark-format source reads
# exactly like the prompt the tuned model is scored on.
DEFAULT_INSTRUCTIONS = {"medqa": render.INSTRUCTIONS["mc"], "usmle": render.INSTRUCTIONS["mc"],
                        "pubmedqa": render.INSTRUCTIONS["abstract"]}


_SURROGATE = re.compile("[\ud800-\udfff]")


class RowError(ValueError):
    """A row that cannot be read: `field` names the part that is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class Example(NamedTuple):  # built once per row: a tuple is the cheapest immutable record
    prompt: str
    completion: str
    text: str          # the row's content (no template), which dedup and decontamination compare
    empty: bool = False


class Standardizer:
    def __init__(self, template: str, tokenizer=None):
        self.template = template
        self.tokenizer = tokenizer

    def __call__(self, value, source: SourceConfig) -> Example:
        if source.format == "alpaca":
            return self.alpaca(value, source)
        return self.item(value, source)

    def alpaca(self, row, source: SourceConfig) -> Example:
        if not isinstance(row, dict):
            raise RowError("<row>", f"expected an object with {', '.join(ALPACA_FIELDS)}, got {type(row).__name__}")
        fields = {}
        for name in ALPACA_FIELDS:
            column = source.columns.get(name, name)
            value = row.get(column)
            if column not in row and name != "input":  # Alpaca omits an empty input; nothing else may be missing
                raise RowError(column, "missing")
            if value is None and name == "input":
                value = ""
            if not isinstance(value, str):
                raise RowError(column, f"expected a string, got {type(value).__name__}")
            if not value.isascii() and _SURROGATE.search(value):
                # JSON can escape half of a UTF-16 pair ("\\udcff"); such a string cannot be written as UTF-8.
                raise RowError(column, "contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): not text")
            fields[name] = clean_text(value)
        instruction, input, output = fields["instruction"], fields["input"], fields["output"]
        prompt = render.apply_template(self.template, instruction, input, tokenizer=self.tokenizer)
        return Example(prompt, _completion(prompt, output), "\n".join((instruction, input, output)),
                       empty=not output or not (instruction or input))

    def item(self, item, source: SourceConfig) -> Example:
        # Benchmark text is kept as the task loader returns it (only NFC), so it matches evaluation.
        question = unicodedata.normalize("NFC", item.question)
        options = {k: unicodedata.normalize("NFC", v) for k, v in item.options.items()}
        if source.format == "pubmedqa":
            context = [unicodedata.normalize("NFC", c) for c in item.context]
            input = render.render_abstract_question(context, question)
            content = [question, *context]
        else:
            input = render.render_mc(question, options)
            content = [question, *options.values()]
        instruction = DEFAULT_INSTRUCTIONS[source.format] if source.instruction is None else source.instruction
        prompt = render.apply_template(self.template, instruction, input, tokenizer=self.tokenizer)
        answer = options.get(item.gold, item.gold)
        return Example(prompt, _completion(prompt, item.gold), "\n".join([instruction, *content, answer]),
                       empty=not question or not options)


def _completion(prompt: str, answer: str) -> str:
    # lm-eval's convention: the space between "Answer:" and the answer belongs to the answer.
    if prompt and not prompt[-1].isspace():
        return render.TARGET_DELIMITER + answer
    return answer


def item_record(item) -> dict:
    """A benchmark item as a plain object, for rejects.jsonl."""
    return {"id": item.id, "question": item.question, "options": item.options, "gold": item.gold,
            "context": list(item.context), "excluded": item.excluded}
