"""The PHI scrubber on a table of identifiers (HIPAA Safe Harbor classes, several hundred cases),
on clinical text it must leave alone, and in linear time."""

import time

import pytest

from sm70.errors import Sm70Error
from sm70.serve.phi import Scrubber

from .phi_cases import NEGATIVES, positive_cases

SCRUB = Scrubber()


@pytest.mark.parametrize("text, expected", list(positive_cases()))
def test_identifiers_are_replaced(text, expected):
    assert SCRUB(text) == expected


@pytest.mark.parametrize("text", NEGATIVES)
def test_clinical_text_is_kept(text):
    assert SCRUB(text) == text


def test_table_is_big_enough():
    assert len(list(positive_cases())) >= 300 and len(NEGATIVES) >= 150


def test_extra_patterns_from_config():
    scrub = Scrubber([r"\bWARD-\d+\b"])
    assert scrub("moved to WARD-12 overnight") == "moved to [REDACTED] overnight"
    with pytest.raises(Sm70Error, match=r"phi_patterns.0: '\(' is not a valid regular expression"):
        Scrubber(["("])


@pytest.mark.parametrize("unit", ["word.", "a@", "1", "1-", "Aa ", "1 ", ":a", "Mr. ", "a.b", "Robert "])
def test_scrubbing_is_linear(unit):
    """Finding: the e-mail pattern was quadratic (40K characters of `word.` took 2.4 s)."""
    def took(n):
        text = unit * (n // len(unit))
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            SCRUB(text)
            best = min(best, time.perf_counter() - start)
        return best

    small, big = took(5_000), took(40_000)
    assert big < 20 * max(small, 1e-3), (small, big)     # linear: ~8x; quadratic: ~64x
