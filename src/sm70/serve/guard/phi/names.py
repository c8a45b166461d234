"""The name finder: every word not known to be safe is a possible name, and context decides the rest.

A word's kind comes from the allow-list (vocab.py): SAFE (an ordinary or clinical word), AMBIGUOUS
(an ordinary word that is also a name: Rose, Hope, Will, Park, Young) or PROPER (anything else:
Verma, Chukwuemeka, O'Sullivan, a typo). PROPER words are masked wherever they stand, lower-case
included, unless they are short abbreviations, places that Safe Harbor allows (countries, states)
or eponyms before a clinical head ("Crohn disease", "Kayser-Fleischer rings"). AMBIGUOUS words
are masked on evidence, each rule one a privacy officer would name:

- after a title or a cue: "Mrs. Hope", "his wife Joy", "named Sunny", "seen by Dr Will Baker";
- next to another name, so a surname carries its given name: "Rose Okafor", "Hyun-woo Park";
- two or more in a capitalized run: "Grace Lee", "Will Smith";
- capitalized in mid-sentence, where an ordinary word would be lower-case: "reviewed with Rose";
- at the start of a sentence, before a verb that takes a person or an age: "Hope reports...",
  "Will, a 34-year-old man, ...", or with a possessive: "Rose's mother";
- beside a kinship word or joined by "and" to a name: "daughter ray", "with hope and Ngozi".

Four or five capitals no list holds (DLCO, BRUE) are taken for acronyms: a name typed in capitals
is caught only after a cue or beside another name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .cues import CUES, EPONYM_HEADS, KIN, NOT_NAMES, PARTICLES, PERSON_VERBS, ROMAN, STRONG_CUES, TITLES
from .vocab import AMBIGUOUS, PROPER, SAFE, Vocabulary

TOKEN = re.compile(r"[^\W_](?:[\w'’]|-(?=[^\W_]))*")
PERSON_NEXT = re.compile(r"\s?[,(]\s?(?:an?\s|aged?\b|dob\b|born\b|mrn\b|\d)|\s(?:" + "|".join(sorted(PERSON_VERBS)) +
                         r")\b", re.I)
SENTENCE_END = ".!?:;\n•*"
DIGIT = re.compile(r"[\d¹²³⁰-⁹₀-₉]")     # "mm³" is a unit, not a word


@dataclass
class Tok:
    start: int
    end: int
    text: str         # as written, possessive stripped
    poss: bool        # "Rose's", "Graves'"
    cap: bool         # first letter upper, not all caps
    caps: bool        # all caps, two letters or more
    kind: int
    initial: bool     # one capital letter: "A." in "A. Kowalski"
    numeric: bool


def _tokens(text: str, vocab: Vocabulary) -> list[Tok]:
    out = []
    for m in TOKEN.finditer(text):
        w, s, e = m.group(0), m.start(), m.end()
        if DIGIT.search(w):
            out.append(Tok(s, e, w, False, False, False, SAFE, False, True))
            continue
        poss = False
        if w[-2:] in ("'s", "’s") and len(w) > 2:
            w, poss, e = w[:-2], True, e - 2        # the span covers "Rose", the "'s" stays
        elif w[-1] in "'’":
            w, poss, e = w[:-1], True, e - 1
        caps = len(w) > 1 and w.isupper()
        cap = w[0].isupper() and not caps
        initial = len(w) == 1 and w.isupper() and (s == 0 or text[s - 1] in " \t\n(\"'")
        kind = SAFE if len(w) == 1 else vocab.kind(w)
        if kind != SAFE and _abbreviation(w, caps):
            kind = SAFE
        if initial and e < len(text) and text[e] == ".":
            e += 1
        out.append(Tok(s, e, w, poss, cap, caps, kind, initial, False))
    return out


def _abbreviation(w: str, caps: bool) -> bool:
    """ "BP", "qSOFA", "dsDNA", "BiPAP": short capitals or capitals inside a word."""
    if caps:
        return len(w) <= 3
    if w[0].islower():
        return any(c.isupper() for c in w[1:])
    inner = sum(c.isupper() for c in w)
    return inner * 2 >= len(w)


def find_names(text: str, vocab: Vocabulary, covered) -> list[tuple[int, int]]:
    """Spans of names in `text`; `covered(start, end)` says a pattern already took those characters."""
    toks = [t for t in _tokens(text, vocab) if not covered(t.start, t.end)]
    n = len(toks)
    name = [False] * n
    keep = [False] * n      # an eponym before its head, a place: never masked

    def gap(i: int) -> str:  # the characters between token i-1 and token i
        return text[toks[i - 1].end:toks[i].start] if i > 0 else text[:toks[0].start] if n else ""

    def sentence_start(i: int) -> bool:
        g = gap(i).strip(" \t\"'“‘(")
        return i == 0 or bool(g) and g[-1] in SENTENCE_END

    # eponyms: a run of eponyms before a head ("Austin Flint murmur"), or "Crohn's" alone; each run once
    eponym = [not t.numeric and vocab.is_eponym(t.text) for t in toks]
    i = 0
    while i < n:
        t = toks[i]
        if not eponym[i] and not (t.cap and t.kind == AMBIGUOUS and not t.numeric):
            i += 1
            continue
        j = i
        while eponym[i] and j + 1 < n and eponym[j + 1] and gap(j + 1) == " ":
            j += 1
        h = j + 1
        while h < n and h <= j + 2 and (toks[h].cap or not t.cap) and toks[h].kind == SAFE and gap(h) == " " and \
                toks[h].text.lower() not in EPONYM_HEADS:
            h += 1              # "Glasgow Coma Scale", "Ann Arbor Staging"
        head = toks[h].text.lower() if h < n and gap(h) in (" ", "'s ", "’s ", "' ", "’ ") else None
        last = toks[j]
        if eponym[i]:
            staged = h < n and (toks[h].numeric or head in ROMAN) and gap(h) == " "    # "Tanner IV", "Gleason 7"
            if head in EPONYM_HEADS or staged or (last.poss and (head is None or
                                                       not toks[h].cap and head not in CUES)):
                for k in range(i, j + 1):
                    keep[k] = True
        elif head in EPONYM_HEADS and not t.poss:
            keep[i] = True          # "Graves disease", "Wells score", "Bell palsy"
        i = j + 1

    # titles and cues name what follows
    for i, t in enumerate(toks):
        low = t.text.lower()
        title = low in TITLES and (t.cap or t.caps) and (not t.poss)
        cue = low in CUES and not t.poss
        if title:
            keep[i] = True          # "Mrs", "Dr" stay: the title is not the person
        if not (title or cue) or i + 1 >= n or toks[i + 1].numeric:
            continue
        g = gap(i + 1)
        if title and g not in (" ", ". ", ".", ", "):
            continue
        if cue and not title and g.strip(" ,:-") != "" and g.strip() not in (":", "-", "is"):
            continue
        at = i + 1
        if low in STRONG_CUES and toks[at].text.lower() in ("is", "was") and at + 1 < n:
            at += 1                 # "her name is Hope"
        nxt = toks[at]
        strong = low in STRONG_CUES or title
        if keep[at] and not title:
            continue
        pair = at + 1 < n and gap(at + 1) == " " and nxt.kind != SAFE and toks[at + 1].kind != SAFE and \
            not toks[at + 1].numeric and not keep[at + 1] and \
            nxt.text.lower() not in NOT_NAMES and toks[at + 1].text.lower() not in NOT_NAMES
        if pair and not (nxt.cap or nxt.caps):
            name[at + 1] = True     # "daughter joy king", "pt will turner"
        elif not (nxt.kind != SAFE and (nxt.cap or nxt.caps or strong) or nxt.initial or (strong and nxt.cap)):
            continue
        name[at] = True
        keep[at] = False

    runs = _runs(toks, gap)
    plain = {r: all(toks[k].kind != SAFE or toks[k].numeric for k in r) for r in set(runs)}   # no ordinary word
    for i, t in enumerate(toks):
        if keep[i] or t.numeric or name[i]:
            continue
        if t.kind == PROPER and not (t.caps and len(t.text) <= 5):
            name[i] = True
        elif t.kind == AMBIGUOUS and not t.cap and not t.caps and sentence_start(i):
            k = i
            while k + 1 < n and k < i + 2 and toks[k + 1].kind != SAFE and gap(k + 1) == " " and not toks[k + 1].cap:
                k += 1
            if _person_follows(toks, k, text):      # "mark was discharged", "sunny long seen today"
                for m in range(i, k + 1):
                    name[m] = True
        elif t.kind == AMBIGUOUS and t.cap:
            run = runs[i]
            mid = not sentence_start(i)
            if len(run) >= 2 and plain[run]:
                name[i] = True                                  # "Grace Lee"
            elif mid and plain[run] and t.text.lower() not in vocab.places:
                name[i] = True                                  # "reviewed with Rose"
            elif t.poss and i + 1 < n and not keep[i]:
                name[i] = True                                  # "Rose's mother"
            elif not mid and _person_follows(toks, i, text):
                name[i] = True                                  # "Hope reports", "Will, a 34-year-old"

    for i, t in enumerate(toks):
        if name[i] or keep[i] or t.numeric or t.kind != AMBIGUOUS:
            continue
        nxt = toks[i + 1].text.lower() if i + 1 < n else ""
        prev = toks[i - 1].text.lower() if i > 0 else ""
        if t.poss and nxt in KIN:
            name[i] = True                                  # "sterling's daughter"
        elif prev in KIN and gap(i) in (" ", ", ") and not t.poss and t.text.lower() not in NOT_NAMES:
            name[i] = True                                  # "daughter ray", "wife grace"
        elif (nxt == "and" and i + 2 < n and name[i + 2]) or (prev == "and" and i > 1 and name[i - 2]):
            name[i] = True                                  # "with hope and Ngozi"

    # names spread to their neighbours: given names, surnames, initials, particles
    changed = True
    while changed:          # a pass each way, so a chain of any length spreads in a bounded number of passes
        changed = False
        for order in (range(n), range(n - 1, -1, -1)):
            for i in order:
                if name[i] or keep[i] or toks[i].numeric:
                    continue
                if _joins(toks, name, i, gap, vocab, sentence_start):
                    name[i] = changed = True
    return _spans(text, toks, name)


def _joins(toks: list[Tok], name: list[bool], i: int, gap, vocab: Vocabulary, sentence_start) -> bool:
    """Token i belongs to the name beside it."""
    t, n = toks[i], len(toks)
    left = i > 0 and name[i - 1] and gap(i) in (" ", ", ")
    right = i + 1 < n and name[i + 1] and gap(i + 1) in (" ", ", ")
    if not (left or right):
        return False
    comma = (left and gap(i) == ", ") and not (right and gap(i + 1) == " ")
    if t.initial:
        return right and gap(i + 1) == " " or left and not comma
    if t.kind != SAFE and (t.cap or t.caps or not toks[i - 1 if left else i + 1].cap):
        return not comma or t.cap                       # "Rose Okafor", "Okafor, Rose", "hyun-woo park"
    low = t.text.lower()
    if low in PARTICLES:
        if right and gap(i + 1) == " " and (left or sentence_start(i) or i > 0 and toks[i - 1].text.lower()
                                             in PARTICLES | TITLES):
            return True                                 # "José de la Cruz", "van der Berg tolerated"
        return left and _name_after(toks, name, i, i - 1)
    if not t.cap or low in CUES or low in TITLES or low in EPONYM_HEADS:
        return False
    # a capitalized word right after a name, in mid-sentence: "Nguyễn Văn An", "LaToya Washington"
    if left and gap(i) == " " and not sentence_start(i):
        return True
    # a capitalized word right before an unknown capitalized one: "Amine Benali", "Mads Østergaard"
    return right and gap(i + 1) == " " and toks[i + 1].kind == PROPER and toks[i + 1].cap and \
        low not in vocab.places


def _runs(toks: list[Tok], gap) -> list[range]:
    """For each token, the capitalized words joined to it by single spaces (one range per run)."""
    out: list[range] = []
    i, n = 0, len(toks)
    while i < n:
        j = i
        if toks[i].cap:
            while j + 1 < n and toks[j + 1].cap and gap(j + 1) == " ":
                j += 1
        out += [range(i, j + 1)] * (j + 1 - i)
        i = j + 1
    return out


def _person_follows(toks: list[Tok], i: int, text: str) -> bool:
    """ "Hope reports", "Will, a 34-year-old", "Rose's": what follows takes a person."""
    return toks[i].poss or bool(PERSON_NEXT.match(text, toks[i].end))


def _name_after(toks, name, i, j) -> bool:
    """A particle joins names on both sides: "José Luis de la Cruz", "Ludwig van Beethoven"."""
    step = 1 if j < i else -1
    k = i + step
    while 0 <= k < len(toks) and toks[k].text.lower() in PARTICLES:
        k += step
    return 0 <= k < len(toks) and (name[k] or toks[k].kind != SAFE and toks[k].cap)


def _spans(text: str, toks: list[Tok], name: list[bool]) -> list[tuple[int, int]]:
    spans: list[list[int]] = []
    for t, is_name in zip(toks, name):
        if not is_name:
            continue
        end = t.end
        if spans and re.fullmatch(r"[\s,.\-]{0,3}", text[spans[-1][1]:t.start]) and \
                "\n" not in text[spans[-1][1]:t.start]:
            spans[-1][1] = end
        else:
            spans.append([t.start, end])
    return [(s, e) for s, e in spans]
