"""The allow-list behind the name finder: which words are known to be safe, and which may be names.

Philter's idea (UCSF, npj Digital Medicine 2020): rather than list names, which are open-ended, list
the words known to be safe and treat every other word as a possible identifier. The lists come from
dictionaries installed with the system, read where Debian puts them, plus our own clinical list:

- English: SCOWL's word lists of size 70 (Debian `wamerican-large`, `wbritish-large`; the smaller
  lists lack words such as "fibrillation"). Their lower-case entries are ordinary words; their
  capitalized entries are proper nouns (given names, surnames, places), which tells us that "Rose",
  "Hope" or "Park" may be a name where "Pain" may not.
- Medical: OpenMedSpel (Debian `hunspell-en-med`): drugs, anatomy, diseases, lab names. Its
  capitalized entries are eponyms (Parkinson, Crohn), kept only before a clinical head.
- Ours (clinical.txt): newer drugs and brands, scores, abbreviations, units, countries and states.

The medical dictionary is GPL: it is read at run time, never copied into sm70.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from sm70.errors import Sm70Error

# Where each system dictionary lives, by Debian package; the first that exists is read.
DICTIONARIES: dict[str, tuple[str, ...]] = {
    "wamerican-large": ("/usr/share/dict/american-english-large",),
    "wbritish-large": ("/usr/share/dict/british-english-large",),
    "hunspell-en-med": ("/usr/share/hunspell/en_med_glut.dic",),
}
INSTALL = "apt-get install " + " ".join(DICTIONARIES)

SAFE, AMBIGUOUS, PROPER = 0, 1, 2     # a plain word; a word that is also a name; anything else
# words the dictionary also lists as proper nouns ("Man", "Old", "Home") that are never taken for names
COMMON = frozenset("""the and for with from into onto upon man men old new male female left right here there more
most now good help home head best main east west north south high low day days city born case age army navy who what
when where why how all any some each both few many much such only also just very well back down over under after
before again then than this that these those she her his him they them their our your you not but can has had have
was were are one two three four five first last next same other part side set let see say said tell told put get got
make made take took come came give gave find found keep kept way ward less least like life live love real free fair
fine full hard late early gross major minor general chief sure true normal""".split())
# prefixes that make a known word into another ("unconjugated", "nonbloody", "rehydration")
PREFIXES = ("non", "un", "re", "de", "dis", "mis", "pre", "post", "hyper", "hypo", "over", "under", "anti", "sub",
            "super", "inter", "intra", "trans", "peri", "cross", "down", "up", "out", "semi", "multi", "micro")
# Endings tried, longest first, when a word is not listed as written ("tachycardias", "titrated").
SUFFIXES = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""),
            ("s", ""), ("ly", ""), ("'s", ""), ("’s", ""), ("'", ""), ("’", ""))


@dataclass(frozen=True)
class Vocabulary:
    safe: frozenset[str]        # lower-cased words known to be ordinary or clinical
    names: frozenset[str]       # lower-cased words a dictionary gives as proper nouns
    eponyms: frozenset[str]     # lower-cased surnames that name diseases and signs
    places: frozenset[str]      # lower-cased proper nouns that are not PHI (countries, states, days)
    clinical: frozenset[str]    # our own [safe] list: never a name, whatever the English dictionary says
    stems: frozenset[str]       # the base forms that take endings: medical and ours ("titrate" + "d")

    def kind(self, word: str) -> int:
        """SAFE, AMBIGUOUS (a safe word that is also a name: "rose", "will") or PROPER."""
        return lower_kind(self, word) if word.islower() else _kind(self, word.lower())

    def is_eponym(self, word: str) -> bool:
        return _eponym(self, word.lower())


@lru_cache(maxsize=100_000)
def _eponym(vocab: Vocabulary, w: str) -> bool:
    return _stem_in(w, vocab.eponyms)


@lru_cache(maxsize=200_000)
def _kind(vocab: Vocabulary, w: str) -> int:
    if w in vocab.clinical or w in vocab.places:
        return SAFE
    if w in vocab.safe or _stem_in(w, vocab.stems):
        return AMBIGUOUS if w in vocab.names else SAFE
    if _contraction(vocab, w):
        return SAFE
    parts = [p for p in w.split("-") if p]
    # a compound is safe when each part is a known word ("non-tender", "one-day-old") or a place
    # ("African-American"), or short beside a known long word ("Anti-HBs", "β-agonist"); "Smith-Jones",
    # "Ka-ho" and "Al-Farsi" stay names
    words = [p in vocab.safe or _stem_in(p, vocab.stems) for p in parts]
    if len(parts) > 1 and (all(words) or all(p in vocab.places for p in parts) or
                           all(k or len(p) <= 3 for p, k in zip(parts, words)) and
                           any(k and len(p) > 3 for p, k in zip(parts, words))):
        return AMBIGUOUS if any(p in vocab.names for p in parts) else SAFE
    return PROPER


def _known(vocab: Vocabulary, w: str) -> bool:
    return w in vocab.safe or _stem_in(w, vocab.stems)


@lru_cache(maxsize=100_000)
def lower_kind(vocab: Vocabulary, w: str) -> int:
    """A word typed in lower case may also be a known word behind a prefix ("nonbloody"); not so a
    capitalized one, where that would let through surnames such as Unger or Dehaan. Two known words
    run together ("breastmilk") are not taken: "campbell" is camp + bell."""
    kind = _kind(vocab, w)
    if kind != PROPER or len(w) < 7:
        return kind
    for p in PREFIXES:
        if w.startswith(p) and _known(vocab, w[len(p):].lstrip("-")):
            return SAFE
    return PROPER


def _stem_in(w: str, words: frozenset[str]) -> bool:
    if w in words:
        return True
    if len(w) < 5:
        return False
    return any(w.endswith(end) and w[: len(w) - len(end)] + add in words for end, add in SUFFIXES)


def _contraction(vocab: Vocabulary, w: str) -> bool:
    """ "don't", "she'll": a safe head and a known ending."""
    w = w.replace("’", "'")
    for end in ("n't", "'re", "'ve", "'ll", "'d", "'m"):
        if w.endswith(end) and len(w) > len(end):
            head = w[: -len(end)]
            return head in vocab.safe or head in ("ca", "wo", "sha")
    return False


def _read_lines(package: str) -> list[str]:
    for path in DICTIONARIES[package]:
        if Path(path).is_file():
            return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    raise Sm70Error(f"the PHI scrubber needs the system dictionary from Debian's {package} package "
                    f"(looked in {', '.join(DICTIONARIES[package])}); install it with `{INSTALL}`")


def _sections() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    into = None
    for line in (resources.files("sm70.serve.guard.phi") / "clinical.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[(\w+)\]", line):
            into = out.setdefault(m.group(1), set())
        elif line and into is not None:
            into.update(w.lower() for w in line.split())
    return out


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    ours = _sections()
    lower, proper, eponyms, medical = set(), set(), set(ours["eponym"]), set()
    for package in ("wamerican-large", "wbritish-large"):
        for w in _read_lines(package):
            w = w.strip()
            if w.endswith("'s"):
                continue              # possessives: the finder strips them before looking up
            if w[:1].isupper():
                if len(w) > 2 and not w.isupper():     # "Rose", not "ICU"
                    proper.add(w.lower())
            else:
                lower.add(w.lower())
    for line in _read_lines("hunspell-en-med")[1:]:
        w = line.split("/", 1)[0].strip()
        if not w or " " in w:
            continue
        if w[:1].isupper() and not w.isupper():
            eponyms.add(w.lower())   # Parkinson, Crohn, Kayser-Fleischer
        else:
            medical.add(w.lower())    # tachycardia, and abbreviations such as AAFP
    # SCOWL lists every inflection; the medical list and ours give base forms, so only they take endings
    safe = lower | medical | ours["safe"]
    names = (proper - COMMON - ours["place"]) | ours["given"]
    return Vocabulary(safe=frozenset(safe), names=frozenset(names),
                      eponyms=frozenset(eponyms), places=frozenset(ours["place"]),
                      clinical=frozenset(ours["safe"]), stems=frozenset(medical | ours["safe"]))
