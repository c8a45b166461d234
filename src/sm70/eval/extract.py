"""Map a model's free-text answer to one choice key (`generate` mode).

`choices` maps keys to option texts: letters to options for multiple choice, or
{"yes": "yes", "no": "no", "maybe": "maybe"} for PubMedQA. The extractor tries, strongest
evidence first:

1. the whole reply is a key or an option text ("B", "(B)", "b.", "**C**", "Metformin", "Yes.");
2. explicit statements ("the answer is C", "Answer: B", "I would choose option D",
   "B is correct"); when there are several, the LAST one counts, because chain-of-thought
   replies weigh options first and commit at the end;
3. a refusal ("I cannot answer", "not sure") yields None rather than a guess;
4. a reply that opens with a marked letter or key word ("B) Metformin ...", "No, because ...");
5. exactly one distinct choice mentioned anywhere (a marked letter such as "(C)" / "option C",
   or an option's text).

A reply that asserts two different choices ("either A or B") or mentions several without
committing yields None; the caller counts None as wrong and lists it. Bare capital letters in
running text are not read as choices: "A 45-year-old..." and "I think..." are words, not options.
"""

from __future__ import annotations

import re

# Evidence that settles the question as unanswerable: two different choices asserted, a letter
# that is no option, or a refusal. Extraction stops there and returns None instead of guessing.
UNUSABLE = object()

_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?=\s|$)|[;\n]")
_CUES = re.compile(
    r"""\b(?:
        (?:the\s+|my\s+|final\s+|correct\s+|best\s+|right\s+|most\s+likely\s+)*answer\s*
            (?:is|would\s+be|should\s+be|will\s+be|must\s+be|[:=]|-|–)
      | (?:i\s+would|i'd|i\s+will|i'll|i|we\s+would|we|would)\s+(?:choose|select|pick|go\s+with|opt\s+for)
      | (?:correct|best|right)\s+(?:option|choice)\s*(?:is|would\s+be|:)
    )\s*""",
    re.I | re.X,
)
# "B is correct", "option C is the best answer": the key comes before the cue.
_POST_CUE = re.compile(
    r"(?P<prefix>\b(?:option|choice|answer)\s+|\()?\b(?P<letter>[A-Za-z])\)?"
    r"\s+is\s+(?:the\s+)?(?:correct|right|best)\b", re.I)
_HEDGES = re.compile(
    r"^(?:\s|[*\"'`:]|\b(?:probably|likely|most\s+likely|clearly|definitely|therefore|thus|"
    r"option|choice|letter|answer|the)\b)+", re.I)
_REFUSAL = re.compile(
    r"\b(?:i(?:\s+(?:cannot|can't|can\s+not|am\s+unable|am\s+not\s+able)|'m\s+(?:unable|not\s+able))|"
    r"unable\s+to\s+(?:answer|determine)|not\s+sure|no\s+idea|don't\s+know|do\s+not\s+know|"
    r"cannot\s+be\s+determined|insufficient\s+information)\b",
    re.I,
)


def extract_answer(text: str, choices: dict[str, str]) -> str | None:
    """The key of `choices` that `text` answers, or None when it answers none or several."""
    text = _normalize(text or "")
    if not text:
        return None
    m = _Matcher(choices)
    for step in (m.whole, m.asserted, _refusal, m.leading, m.mentioned):
        found = step(text)
        if found is not None:
            return None if found is UNUSABLE else found
    return None


def _refusal(text: str):
    return UNUSABLE if _REFUSAL.search(text) else None


def _normalize(text: str) -> str:
    if "</think>" in text:  # reasoning models: only what follows the thinking block is the reply
        text = text.rsplit("</think>", 1)[1]
    text = re.sub(r"(\*\*|__)\s*\(?([A-Za-z])\)?[.):]?\s*\1", r"(\2)", text)  # **C** / **C.** -> (C)
    text = re.sub(r"\*\*|__|`", "", text)
    return re.sub(r"[ \t]+", " ", text).strip()


class _Matcher:
    def __init__(self, choices: dict[str, str]):
        self.keys = {k.lower(): k for k in choices}
        self.letters = all(len(k) == 1 and k.isalpha() for k in choices)
        # Option texts (and word keys such as "yes"), longest first so "insulin glargine" beats "insulin".
        texts = {}
        for key, option in choices.items():
            for t in (option, key if not self.letters else ""):
                t = re.sub(r"\s+", " ", str(t or "")).strip().rstrip(".").lower()
                if t:
                    texts[t] = key
        self.texts = sorted(texts.items(), key=lambda kv: -len(kv[0]))

    # -- the individual kinds of evidence -------------------------------------------------
    def whole(self, text: str):
        bare = text.strip(" \t\n\"'.,:;!()[]").lower()
        if self.letters and len(bare) == 1:
            return self.keys.get(bare)
        for t, key in self.texts:
            if bare == t:
                return key
        return None

    def asserted(self, text: str):
        claims = []  # (position, key or UNUSABLE), in text order
        for match in _CUES.finditer(text):
            value = self._value(text[match.end():])
            if value is not None:
                claims.append((match.start(), value))
        if self.letters:
            for match in _POST_CUE.finditer(text):
                letter = match.group("letter")
                if letter.isupper() or match.group("prefix"):  # "a is correct" is too weak; "(a) is correct" is not
                    claims.append((match.start(), self.keys.get(letter.lower(), UNUSABLE)))
        return max(claims, key=lambda c: c[0])[1] if claims else None

    def leading(self, text: str):
        key, end = None, 0
        if self.letters:
            m = re.match(r"\(?([A-Za-z])[).:](?:\s|$)", text)
            if m and m.group(1).lower() in self.keys:
                key, end = self.keys[m.group(1).lower()], m.end()
        if key is None:
            key = self._text_at_start(text)
            end = 0
        if key is None:
            return None
        # The opening clause must not name a second choice: "Metformin or insulin could ...".
        stop = re.search(r"[,;!?\n]|\.(?:\s|$)", text[end:])
        clause = text[end: end + stop.start()] if stop else text[end:]
        return key if self.mentioned(clause) in (None, key) else UNUSABLE

    def mentioned(self, text: str):
        found = set(self._text_mentions(text))
        if self.letters:
            for m in re.finditer(r"\(([A-Za-z])\)|\b(?i:option|choice)\s+\(?([A-Z])\b|\b([A-Z])\)", text):
                letter = (m.group(1) or m.group(2) or m.group(3)).lower()
                if letter in self.keys:
                    found.add(self.keys[letter])
        if len(found) > 1:
            return UNUSABLE
        return found.pop() if found else None

    # -- helpers --------------------------------------------------------------------------
    def _value(self, rest: str):
        """Read what follows a cue, up to the end of its sentence."""
        rest = _HEDGES.sub("", rest)
        if re.match(r"not\b", rest, re.I):
            return None
        if self.letters:
            lead = _letter_at_start(rest)
            if lead is not None:
                letter, end = lead
                key = self.keys.get(letter.lower(), UNUSABLE)  # a letter that is no option: unusable
                other = re.match(r"\s*(?:,|/|&|\bor\b|\band\b)\s*\(?([A-Z])\)?(?![\w'])", rest[end:])
                if other and self.keys.get(other.group(1).lower()) != key:
                    return UNUSABLE  # "A or B"
                return key
        key = self._text_at_start(rest)
        if key is not None:
            return key
        stop = _SENTENCE_END.search(rest)
        region = rest[: stop.start()] if stop else rest
        found = set(self._text_mentions(region))
        if self.letters:
            for m in re.finditer(r"(?<![\w'])(\()?([A-Z])\)?(?![\w'])", region):
                marked = m.group(1) or _reads_as_letter(m.group(2), region[m.end():])
                if marked and m.group(2).lower() in self.keys:
                    found.add(self.keys[m.group(2).lower()])
        if len(found) > 1:
            return UNUSABLE
        return found.pop() if found else None

    def _text_at_start(self, text: str):
        low = text.lower()
        for t, key in self.texts:
            if low.startswith(t) and not (len(low) > len(t) and (low[len(t)].isalnum() or low[len(t)] == "-")):
                return key
        return None

    def _text_mentions(self, text: str) -> list[str]:
        """Keys whose option text occurs as whole words; a longer text hides those it contains."""
        low = text.lower()
        taken = [False] * len(low)
        keys = []
        for t, key in self.texts:
            for m in re.finditer(r"(?<![\w-])" + re.escape(t) + r"(?![\w-])", low):
                if not any(taken[m.start():m.end()]):
                    taken[m.start():m.end()] = [True] * (m.end() - m.start())
                    keys.append(key)
        return keys


# "A" and "I" are also English words; after them comes a noun or verb ("A beta blocker",
# "I think"), whereas a chosen letter is followed by punctuation or one of these words.
_AFTER_LETTER = re.compile(
    r"\s+(?:because|since|as|or|and|nor|is|was|which|would|seems|fits|vs|versus|here|best)\b|\s*(?:$|[^\w\s])")


def _reads_as_letter(letter: str, following: str) -> bool:
    return letter not in "AI" or bool(_AFTER_LETTER.match(following)) or not re.match(r"\s+[a-z]", following)


def _letter_at_start(rest: str) -> tuple[str, int] | None:
    """(letter, end) for a choice letter opening `rest`: "B", "(B)", "B)", "B - Metformin",
    "B Metformin", never "A beta blocker" or "I think"; lower case only when punctuation or the
    end follows ("(b)", "b.")."""
    m = re.match(r"(\()?([A-Z])\)?(?![\w'])", rest)
    if m and (m.group(1) or _reads_as_letter(m.group(2), rest[m.end():])):
        return m.group(2), m.end()
    m = re.match(r"\(?([a-z])(?=\)|[.,;:!?]?\s*$|[.,;:!?]\s)\)?", rest)
    return (m.group(1), m.end()) if m else None
