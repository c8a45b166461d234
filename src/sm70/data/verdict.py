"""What each row is, decided without looking at any other row: the work that runs in parallel.

An `Examiner` turns a raw row into a `Verdict`: malformed, excluded, empty, too long or
contaminated, or else its training line plus the two fingerprints that the (sequential)
deduplicator compares. It holds the decontamination index, read-only, so worker processes forked
after it is built share it instead of rebuilding it.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any, NamedTuple

from sm70.data.clean import TokenCounter, match_words
from sm70.data.config import DataConfig, SourceConfig
from sm70.data.decontam import Decontaminator
from sm70.data.dedup import exact_key, minhash
from sm70.data.standardize import RowError, Standardizer


class Verdict(NamedTuple):  # pickled back from the workers: a tuple is the cheapest to send
    reason: str | None = None     # why the row is removed; None while it may be kept
    detail: str | None = None
    line: str | None = None       # the row as it will be written to train/val.jsonl
    tokens: int = 0
    key: int | None = None        # exact-duplicate key (None with dedup.exact off)
    sketch: Any = None            # MinHash (None with dedup.near off)


class Examiner:
    def __init__(self, cfg: DataConfig, decontaminator: Decontaminator):
        self.cfg = cfg
        self.tokens = TokenCounter(cfg.tokenizer)
        self.standardize = Standardizer(cfg.template, self.tokens.tokenizer)
        self.decontaminator = decontaminator

    def examine(self, raw, source: SourceConfig) -> Verdict:
        if raw.error:
            return Verdict("malformed", raw.error)
        if getattr(raw.value, "excluded", None):
            return Verdict("excluded", raw.value.excluded)
        try:
            example = self.standardize(raw.value, source)
        except RowError as e:
            return Verdict("malformed", str(e))
        if example.empty:
            return Verdict("empty")
        n = self.tokens(example.prompt + example.completion)
        if n > self.cfg.max_tokens:
            return Verdict("too_long", f"{n} tokens > max_tokens {self.cfg.max_tokens}")
        # The row is normalised and split into words once; the exact key, the contamination probe
        # and the MinHash shingles all read these words.
        words = match_words(example.text)
        dedup = self.cfg.dedup
        key = exact_key(words) if dedup.exact else None
        task = self.decontaminator.match(words)
        if task:
            # Still keyed: a later exact copy of a contaminated row is reported as the duplicate it is.
            return Verdict(f"contaminated:{task}", key=key)
        return Verdict(None, None, _line(f"{source.name}-{raw.record}", source.name, example), n, key,
                       minhash(words, dedup, self.cfg.seed) if dedup.near else None)

    def examine_chunk(self, chunk: list, source: SourceConfig) -> list[Verdict]:
        return [self.examine(raw, source) for raw in chunk]


def _line(row_id: str, source: str, example) -> str:
    """The train/val line, byte-identical to json.dumps({id, source, prompt, completion}, ensure_ascii=False).

    It calls json's own C string encoder directly: the general encoder's per-call set-up cost
    as much as encoding the strings themselves.
    """
    return (f'{{"id": {encode_basestring(row_id)}, "source": {encode_basestring(source)}, '
            f'"prompt": {encode_basestring(example.prompt)}, "completion": {encode_basestring(example.completion)}}}\n')
