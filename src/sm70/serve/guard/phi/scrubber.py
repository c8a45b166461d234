"""The scrubber: identifier spans from the patterns and the name finder, replaced by typed placeholders.

Every finder reads the original text and reports spans; overlapping spans merge, so a street
address holding a postcode comes out as one [ADDRESS]. Names are looked for only outside the
spans the patterns took, and bare long numbers last, once every cued or formatted number has
its own label.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Iterable

from sm70.errors import Sm70Error

from .names import find_names
from .patterns import PATTERNS, B, E
from .vocab import SAFE, vocabulary

# bare numbers and codes left over: nine digits are an SSN's shape, ten a phone's, the rest an ID
TAIL = re.compile(rf"{B}(?:\d{{7,}}|(?=[A-Za-z0-9-]{{0,30}}\d{{5}})(?=[A-Za-z0-9-]{{0,30}}[A-Za-z])"
                  rf"[A-Za-z0-9][A-Za-z0-9-]{{5,30}}){E}")
DOSE = re.compile(r"\d+(?:[.,]\d+)?(?:[a-zA-Zµ]{1,5})")        # "50000IU", "100000units"
TAIL_UNIT = re.compile(r"\s?(?:mg|mcg|ug|g\b|kg|ml|mL|L\b|units?|IU|mmol|mEq|cells|copies|/)")


class Scrubber:
    """`scrub(text)` returns the text with identifiers replaced; `scrub.spans(text)` says where."""

    def __init__(self, extra: Iterable[str] = ()):
        self.patterns = [(label, re.compile(rx)) for label, rx in PATTERNS]
        for i, rx in enumerate(extra):
            try:
                self.patterns.append(("REDACTED", re.compile(rx)))
            except re.error as e:
                raise Sm70Error(f"phi_patterns.{i}: {rx!r} is not a valid regular expression ({e})") from None
        self.vocab = vocabulary()

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        found, guard = [], []
        for label, rx in self.patterns:
            cued = "v" in rx.groupindex
            for m in rx.finditer(text):
                s, e = m.span("v") if cued and m.group("v") is not None else m.span()
                if e > s:
                    found.append((s, e, label))
                    guard.append((*m.span(), label))     # a cue ("IMEI", "lives in") is no name either
        # Safe Harbor lets the country and the state stay: "moved from Brazil"
        found = _merge([f for f in found if f[2] != "LOCATION" or not self._allowed_place(text[f[0]:f[1]])])
        guard = _merge(guard)
        starts, ends = [s for s, _, _ in guard], [e for _, e, _ in guard]

        def covered(s: int, e: int) -> bool:
            i = bisect_right(starts, e - 1) - 1
            return i >= 0 and ends[i] > s

        found += [(s, e, "NAME") for s, e in find_names(text, self.vocab, covered)]
        found = _merge(found)
        for _ in range(2):      # "Nairobi 00100" and "75001 Paris": each finds the other
            found = _merge(found + _postcodes_by_places(text, found))
            found = _merge(found + _towns_after_postcodes(text, found, self.vocab))
        for m in TAIL.finditer(text):
            s, e = m.span()
            if not covered(s, e) and not DOSE.fullmatch(m.group(0)) and not TAIL_UNIT.match(text, e):
                digits = sum(c.isdigit() for c in m.group(0))
                found.append((s, e, {9: "SSN", 10: "PHONE"}.get(digits, "ID") if m.group(0).isdigit() else "ID"))
        return _merge(found)

    def _allowed_place(self, words: str) -> bool:
        return all(w.lower() in self.vocab.places for w in re.findall(r"[^\W\d_]+", words))

    def __call__(self, text: str) -> str:
        out, at = [], 0
        for s, e, label in self.spans(text):
            out += [text[at:s], f"[{label}]"]
            at = e
        out.append(text[at:])
        return "".join(out)


PLACE_CODE = re.compile(r"(?:,\s?|\s)(?:-\s)?(?:[A-Za-z]{2}\s)?([A-Za-z]{0,2}\d{3,6}(?:[ -][A-Za-z0-9]{2,4})?|"
                        r"[A-Za-z]{1,2}\d[A-Za-z\d]?\s?\d[A-Za-z]{2}|[A-Za-z]\d[A-Za-z]\s?\d[A-Za-z]\d)(?![\w-])")
TOWN = re.compile(r"[,\s]\s?([^\W\d_][\w'’-]{1,40})")


def _postcodes_by_places(text: str, spans) -> list[tuple[int, int, str]]:
    """A number right after a town or an address is its postcode: "Nairobi 00100", "Lagos 101233"."""
    out = []
    for _, e, label in spans:
        if label in ("NAME", "LOCATION", "ADDRESS") and (m := PLACE_CODE.match(text, e)) and \
                not TAIL_UNIT.match(text, m.end(1)):
            out.append((*m.span(1), "ZIP"))
    return out


def _towns_after_postcodes(text: str, spans, vocab) -> list[tuple[int, int, str]]:
    """A word right after a postcode or a street is its town: "75001 paris", "rue de rivoli, 75001 paris"."""
    out = []
    for _, e, label in spans:
        if label in ("ZIP", "ADDRESS") and (m := TOWN.match(text, e)) and vocab.kind(m.group(1)) != SAFE:
            out.append((*m.span(1), "LOCATION"))
    return out


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping spans become one, named by the one that starts first (the longest, on a tie)."""
    out: list[list] = []
    for s, e, label in sorted(spans, key=lambda x: (x[0], -x[1])):
        if out and s < out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e, label])
    return [(s, e, label) for s, e, label in out]
