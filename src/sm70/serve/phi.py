"""A PHI scrubber for audit content: identifiers replaced by typed placeholders.

Applied only when the operator turns on `audit_content=true`. Patterns are ordered: structured
identifiers (e-mail, URL, IP, SSN, record numbers) go first so that the looser ones (phone,
dates, zip) cannot eat part of them. This is a safety net for a log file, not a de-identification
guarantee: names are caught only after a title or a "patient"/"name" cue.
"""

from __future__ import annotations

import re
from typing import Iterable

MONTHS = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
NAME = r"[A-Z][a-zA-Z'\-]+(?:\s+[A-Z][a-zA-Z'\-]+)?"

DEFAULT_PATTERNS: list[tuple[str, str]] = [
    ("EMAIL", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    ("URL", r"\b(?:https?://|www\.)[^\s<>\"']+"),
    ("IP", r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    ("SSN", r"\b\d{3}-\d{2}-\d{4}\b"),
    ("MRN", r"(?i)\b(?:MRN|medical record(?: number| no\.?)?|record(?: number| no\.?| #)|chart(?: number| no\.?)|patient id|acct|account(?: number| no\.?)?)\s*[:#]?\s*[A-Z0-9][A-Z0-9-]{3,}\b"),
    ("PHONE", r"(?<!\w)(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"),
    ("DATE", rf"\b(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|{MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}\s+{MONTHS}\.?,?\s+\d{{4}})\b"),
    ("ADDRESS", r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl)\b\.?"),
    ("ZIP", r"\b\d{5}(?:-\d{4})?\b"),
    ("NAME", rf"(?:(?<=\bMr\. )|(?<=\bMrs\. )|(?<=\bMs\. )|(?<=\bDr\. )|(?<=\bMr )|(?<=\bMrs )|(?<=\bMs )|(?<=\bDr )){NAME}"),
    ("NAME", rf"(?i:(?<=\bpatient )|(?<=\bpatient: )|(?<=\bname: )|(?<=\bname is )){NAME}"),
]


class Scrubber:
    def __init__(self, extra: Iterable[str] = ()):
        self.patterns = [(label, re.compile(rx)) for label, rx in DEFAULT_PATTERNS]
        self.patterns += [("REDACTED", re.compile(rx)) for rx in extra]

    def __call__(self, text: str) -> str:
        for label, rx in self.patterns:
            text = rx.sub(f"[{label}]", text)
        return text
