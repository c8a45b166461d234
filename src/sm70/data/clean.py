"""Text cleaning (what goes into training) and normalisation (what dedup and decontamination compare).

Cleaning changes the training text only where the change cannot alter meaning: Unicode NFC,
line endings, runs of spaces, trailing spaces, blank-line runs. Normalisation is much coarser
(case-folded words only) and is never written out: it decides which rows are "the same".
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_TRAILING = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def match_words(text: str) -> list[str]:
    """Case-folded word tokens: "The  patient's B.P." and "the patients bp" differ only in what this drops."""
    return _WORD.findall(text.casefold())


class TokenCounter:
    """Token length of a training row: the named tokenizer's count, or a cheap estimate without one.

    The estimate is deliberately high (one token per 3 characters; Llama-2's tokenizer averages
    about 3.5-4 characters per token on medical English), so `max_tokens` errs on the safe side.
    """

    def __init__(self, tokenizer: str | None = None):
        self.tokenizer = None
        if tokenizer:
            from sm70.model.load import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer)

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return -(-len(text) // 3)
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])
