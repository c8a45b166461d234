"""Text cleaning (what goes into training) and normalisation (what dedup and decontamination compare).

Cleaning changes the training text only where the change cannot alter meaning: Unicode NFC,
line endings, runs of spaces, trailing spaces, blank-line runs. Normalisation is much coarser
(case-folded words only) and is never written out: it decides which rows are "the same".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterator

_SPACES = re.compile(r"[ \t\f\v\u00a0]{2,}|[\t\f\v\u00a0]")
_TRAILING = re.compile(r" +\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_NON_WORD_TO_SPACE = bytes(c if c in _WORD_BYTES else 32 for c in range(256))


def clean_text(text: str) -> str:
    # Most rows are already clean: test cheaply before rewriting (this runs three times per row).
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "  " in text or "\t" in text or "\u00a0" in text or "\f" in text or "\v" in text:
        text = _SPACES.sub(" ", text)
    if " \n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def match_words(text: str) -> list[bytes]:
    """Case-folded words as UTF-8 bytes: "The  patient's B.P." and "the patient s b p" give the same list.

    Words are `\\w+` runs. ASCII text (nearly all rows) takes a byte-table path that is about twice
    as fast as the regular expression and gives the same words.
    """
    text = text.casefold()
    if text.isascii():
        return text.encode("ascii").translate(_NON_WORD_TO_SPACE).split()
    return [w.encode() for w in _WORD.findall(text)]


def ngrams(words: list[bytes], n: int) -> list[bytes]:
    """Every run of `n` consecutive words, space-joined (zip over shifted lists: the fastest form in CPython)."""
    return list(map(b" ".join, zip(*[words[i:] for i in range(n)])))


def gram_keys(words: list[bytes], n: int, step: int = 1) -> Iterator[int]:
    """Keys of the `n`-word runs starting at word 0, step, 2 x step, ...: hashes of word tuples.

    A tuple's hash reuses each word's cached hash, so no joined string is built per run. Python
    salts hash() per process: these keys live in one process (and its forks), never on disk.
    """
    return map(hash, zip(*[words[i::step] for i in range(n)]))


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
