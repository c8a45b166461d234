"""The benchmark registry: a task loads its files into `Item`s and renders an item as a prompt
plus one continuation per choice, through the shared renderer in `sm70.render`.

`prompt` styles: `lm-eval` reproduces lm-evaluation-harness (`medqa_4options`: choices " A".." D";
`pubmedqa`: " yes", " no", " maybe"); `option-text` scores the letter and the full answer text
(the Clinical Camel / SM70 harness), which for PubMedQA is the same as `lm-eval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal, Sequence

from sm70 import render
from sm70.errors import Sm70Error
from sm70.eval.tasks import medqa, pubmedqa, usmle
from sm70.eval.tasks.item import Item

PROMPT_STYLES = ("lm-eval", "option-text")
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default between a shot's answer and the next question


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[..., list[Item]]  # (path | None, **options) -> items
    layout: Literal["mc", "abstract"]
    shots_split: str                 # the split `shots_from` defaults to


TASKS: dict[str, Task] = {
    "medqa": Task("medqa", medqa.load, "mc", "train"),
    "pubmedqa": Task("pubmedqa", pubmedqa.load, "abstract", "train"),
    "usmle_step1": Task("usmle_step1", partial(usmle.load, steps=(1,)), "mc", "none"),
    "usmle_step2": Task("usmle_step2", partial(usmle.load, steps=(2,)), "mc", "none"),
    "usmle_step3": Task("usmle_step3", partial(usmle.load, steps=(3,)), "mc", "none"),
    "usmle": Task("usmle", partial(usmle.load, steps=(1, 2, 3)), "mc", "none"),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise Sm70Error(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def load_task(name: str, path: str | Path | None = None, **options) -> list[Item]:
    """Items of a benchmark from `path` (a file or folder in its real format); the bundled sample when None."""
    return get_task(name).load(None if path is None else Path(path), **options)


def question_text(task: Task, item: Item) -> str:
    if task.layout == "abstract":
        text = render.render_abstract_question(item.context, item.question)
    else:
        text = render.render_mc(item.question, item.options)
    return render.render_documents(item.documents) + text if item.documents else text


def continuations(task: Task, item: Item, style: str) -> list[str]:
    """One continuation per option, in option order; each starts with the target delimiter."""
    if style not in PROMPT_STYLES:
        raise Sm70Error(f"prompt: unknown style {style!r}; use one of {', '.join(PROMPT_STYLES)}")
    if task.layout == "abstract":
        return [render.TARGET_DELIMITER + text for text in item.options.values()]
    if style == "option-text":
        return [render.mc_text_completion(k, v) for k, v in item.options.items()]
    return [render.mc_letter_completion(k) for k in item.options]


def fewshot_block(task: Task, shots: Sequence[Item], style: str) -> str:
    """lm-eval's few-shot layout: each shot is question + gold continuation + "\\n\\n"."""
    parts = []
    for shot in shots:
        gold = continuations(task, shot, style)[list(shot.options).index(shot.gold)]
        parts.append(question_text(task, shot) + gold + FEWSHOT_DELIMITER)
    return "".join(parts)


__all__ = ["Item", "Task", "TASKS", "PROMPT_STYLES", "get_task", "load_task", "question_text",
           "continuations", "fewshot_block"]
