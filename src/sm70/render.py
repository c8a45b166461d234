"""The one renderer of prompts, shared by the data stage (training rows) and the evaluation stage.

Training and testing must see the same text for the same item, or a fine-tuned model is scored on a
format it never saw. So multiple-choice rendering and instruction templates live here, once.

`render_mc` reproduces lm-evaluation-harness's `medqa_4options` prompt exactly:
"Question: <q>\nA. <opt>\nB. <opt>\n...Answer:" and the answer is scored as the continuation
" A" (lm-eval's target delimiter is a single space; " A" and "A" are different tokens in byte-level
BPE, and the space belongs to the answer, not to the prompt).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

TARGET_DELIMITER = " "


# The instruction a template wraps around a benchmark question, by layout. Training rows built from
# benchmark-format sources and evaluation prompts take it from here, so both say the same words.
INSTRUCTIONS = {
    "mc": "Answer the following multiple-choice question with the letter of the correct option.",
    "abstract": "Answer the question about the abstract with yes, no or maybe.",
}


def render_mc(question: str, options: Mapping[str, str]) -> str:
    """Question and lettered options in lm-eval's `medqa_4options` layout (no trailing space)."""
    lines = "".join(f"{letter}. {text}\n" for letter, text in options.items())
    return f"Question: {question}\n{lines}Answer:"


def render_abstract_question(contexts: Sequence[str], question: str) -> str:
    """PubMedQA in lm-eval's `pubmedqa` layout: contexts joined by newlines, then the question.
    Without contexts (PubMedQA*, MIRAGE's question-only setting) the Abstract line is left out."""
    if not contexts:
        return f"Question: {question}\nAnswer:"
    return "Abstract: {}\nQuestion: {}\nAnswer:".format("\n".join(contexts), question)


def render_documents(snippets: Sequence[str]) -> str:
    """Retrieved snippets, numbered as MedRAG numbers them, before the question they may answer."""
    lines = "".join(f"[{n}] {text}\n" for n, text in enumerate(snippets, start=1))
    return f"Relevant documents:\n{lines}\n"


def mc_letter_completion(letter: str) -> str:
    return TARGET_DELIMITER + letter


def mc_text_completion(letter: str, text: str) -> str:
    """Option-text style (Clinical Camel / SM70 harness): the answer is the letter and its full text."""
    return f"{TARGET_DELIMITER}{letter}. {text}"


# Instruction templates: (instruction, input) -> prompt. The completion follows the prompt directly.
def _plain(instruction: str, input: str) -> str:
    return "\n\n".join(part for part in (instruction.strip(), input) if part)


def _alpaca(instruction: str, input: str) -> str:
    # Stanford Alpaca's template, which medAlpaca trains with (medalpaca/prompt_templates/alpaca.json).
    if input:
        return ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
    return ("Below is an instruction that describes a task. Write a response that appropriately completes "
            f"the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def _medalpaca(instruction: str, input: str) -> str:
    # medAlpaca's own template (medalpaca/prompt_templates/medalpaca.json).
    return f"Context: {instruction}\n\nQuestion: {input}\n\nAnswer: "


TEMPLATES: dict[str, Callable[[str, str], str]] = {
    "plain": _plain,
    "alpaca": _alpaca,
    "medalpaca": _medalpaca,
}


def apply_template(name: str, instruction: str, input: str, tokenizer=None) -> str:
    """Render a prompt with a named template; `chat` uses the tokenizer's own chat template."""
    if name == "chat":
        if tokenizer is None:
            raise ValueError("template 'chat' needs the model's tokenizer")
        content = _plain(instruction, input)
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    try:
        return TEMPLATES[name](instruction, input)
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {sorted(TEMPLATES) + ['chat']}") from None
