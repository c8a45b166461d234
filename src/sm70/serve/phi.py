"""A PHI scrubber for audit content: identifiers replaced by typed placeholders.

Applied only when the operator turns on `audit_content=true`, in the audit writer's thread. The
checklist is HIPAA Safe Harbor's 18 identifiers: names, places smaller than a state (street, PO
box, city after a cue, county, ZIP), every date element but the year and ages over 89, phone and
fax numbers, e-mail, SSN, record, account, health-plan, licence, vehicle and device numbers, URLs,
IP addresses and any other number given with an identifier cue. Photos and biometrics do not
occur in text. Clinical numbers must survive: doses, lab values, vitals, ICD and CPT codes.

This is a safety net for a log file, not certified de-identification: a name is caught after a
title or a cue ("patient", "wife", "name:"), or when it is in a list of common given names and
surnames (phi_names.txt); a rare name in running text without either is missed.

Every pattern runs in linear time: a match can only start where a token starts (a lookbehind
forbids starting inside one) and every repetition is bounded, so no input makes a pattern retry
from every position (the old e-mail pattern took seconds on 40K characters of "word.").
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Callable, Iterable

from sm70.errors import Sm70Error

MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
STATES = (r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|"
          r"NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY)")
STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
          r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Close)")
WORD = r"[A-Z][a-z][a-z'\-]{0,30}"
# a unit after "100-1000" makes it a dose or a range, not a local phone number
UNIT = r"(?!\s?(?:mg|mcg|ug|µg|g\b|kg|ml|mL|L\b|units?|U\b|IU|iu|mmol|mEq|meq|%|/|mm|cm|hours?|h\b|days?|min|x\b))"
B = r"(?<![\w@.+-])"     # a match starts only where a token starts
E = r"(?![\w@])"

# (label, pattern); a pattern with a group named `v` replaces only that group (the cue stays)
DEFAULT_PATTERNS: list[tuple[str, str]] = [
    ("EMAIL", rf"{B}[\w.+-]{{1,64}}@[\w-]{{1,63}}(?:\.[\w-]{{1,63}}){{1,8}}"),
    ("URL", r"(?<![\w/])(?:https?://|ftp://|www\.)[^\s<>\"']{0,2000}[^\s<>\"'.,;:)\]]"),
    ("URL", rf"{B}(?:[a-z0-9-]{{1,63}}\.){{1,6}}(?:com|org|net|edu|gov|io|us|uk|info|health)(?:/[^\s<>\"']{{0,2000}})?{E}"),
    ("IP", rf"{B}(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1?\d?\d){E}"),
    ("IP", r"(?i)(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}"
           r"(?::[0-9a-f]{1,4}){0,6})?|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}))(?![\w:])"),
    ("SSN", rf"{B}\d{{3}}[- ]\d{{2}}[- ]\d{{4}}{E}"),
    ("SSN", r"(?i)\b(?:SSN|SS#|social security(?: number| no\.?| #)?)[\s:#]{0,3}(?P<v>\d{9})\b"),
    ("MRN", r"(?i)\b(?:MRN|MR ?#|medical record(?: number| no\.?| #)?|record(?: number| no\.?| #)|chart"
            r"(?: number| no\.?| #)|patient id|case (?:number|no\.?|#)|encounter (?:number|no\.?|#|id))"
            r"[\s:#]{0,3}(?P<v>[A-Z0-9][A-Z0-9-]{0,24})\b"),
    ("ACCOUNT", r"(?i)\b(?:acct|account)(?: number| no\.?| #)?[\s:#]{0,3}(?P<v>[A-Z0-9][A-Z0-9-]{2,24})\b"),
    ("HEALTH_PLAN", r"(?i)\b(?:member|subscriber|beneficiary|insurance|policy|group|health plan|medicare|medicaid|"
                    r"MBI|HICN|plan)(?: id| number| no\.?| #)?[\s:#]{0,3}"
                    r"(?P<v>(?=[A-Z0-9-]{0,24}\d)[A-Z0-9][A-Z0-9-]{3,24})\b"),
    ("HEALTH_PLAN", rf"{B}[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?"
                    rf"[AC-HJKMNP-RT-Y]{{2}}\d{{2}}{E}"),                       # Medicare MBI
    ("ID", r"(?i)\b(?:NPI|DEA|licen[cs]e|certificate|passport|driver'?s licen[cs]e|DL)(?: number| no\.?| #)?"
           r"[\s:#]{0,3}(?P<v>(?=[A-Z0-9-]{0,24}\d)[A-Z0-9][A-Z0-9-]{3,24})\b"),
    ("VEHICLE", r"(?i)\b(?:VIN|licen[cs]e plate|plate(?: number| no\.?| #)?)[\s:#]{0,3}"
                r"(?P<v>(?=[A-Z0-9-]{0,24}\d)[A-Z0-9][A-Z0-9-]{2,24})\b"),
    ("VEHICLE", rf"{B}(?=[A-HJ-NPR-Z0-9]{{0,16}}\d)(?=[A-HJ-NPR-Z0-9]{{0,16}}[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{{17}}{E}"),
    ("DEVICE", r"(?i)\b(?:serial(?: number| no\.?| #)?|S/N|SN|device (?:id|number|no\.?|#)|UDI|IMEI)[\s:#]{0,3}"
               r"(?P<v>(?=[A-Z0-9-]{0,30}\d)[A-Z0-9][A-Z0-9()-]{3,30})\b"),
    ("PHONE", rf"(?<![\w+]){B}(?:\+?1[\s.-]?)?(?:\(\d{{3}}\)\s?|\d{{3}}[\s.-])\d{{3}}[\s.-]\d{{4}}{E}"),
    ("PHONE", rf"(?<![\w+])\+\d{{1,3}}(?:[\s.-]?(?:\(\d{{1,4}}\)|\d{{2,8}})){{2,5}}{E}"),
    ("PHONE", rf"{B}\d{{3}}-\d{{4}}{E}{UNIT}"),
    ("DATE", rf"{B}(?:\d{{1,2}}[/-]\d{{1,2}}[/-](?:\d{{4}}|\d{{2}})|\d{{1,2}}\.\d{{1,2}}\.\d{{4}}|"
             rf"\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}){E}(?!\.\d)"),
    ("DATE", rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?[\s-](?:of\s)?{MONTHS}\.?(?:,?[\s-]\d{{2,4}})?|"
             rf"{MONTHS}\.?\s\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s\d{{4}})?|{MONTHS}\.?,?\s\d{{4}})\b"),
    ("AGE", r"(?i)\b(?:age[d]?|aged)[\s:]{1,3}(?P<v>(?:9\d|1[0-2]\d))\b"),
    ("AGE", r"(?i)\b(?P<v>(?:9\d|1[0-2]\d))(?=[\s-]{0,2}(?:years?|yrs?|yo\b|y/o|y\.o\.|-year-old|year-old))"),
    ("ADDRESS", rf"\b\d{{1,6}}\s(?:[NSEW]\.?\s)?(?:\d{{1,3}}(?:st|nd|rd|th)|{WORD})(?:\s{WORD}){{0,3}}\s{STREET}\b\.?"
                r"(?:,?\s(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s?[A-Z0-9-]{1,8})?"),
    ("ADDRESS", r"(?i)\bP\.?\s?O\.?\s?Box\s\d{1,8}\b"),
    ("ADDRESS", rf"\b{WORD}(?:\s{WORD})?,\s{STATES}\s\d{{5}}(?:-\d{{4}})?\b"),
    ("ZIP", rf"(?i:\b(?:zip(?: code)?|postal code)[\s:#]{{0,3}})(?P<v>\d{{5}}(?:-\d{{4}})?)\b"),
    ("ZIP", rf"\b{STATES}\s(?P<v>\d{{5}}(?:-\d{{4}})?)\b"),
    ("LOCATION", rf"(?i:\b(?:lives in|living in|resides in|resident of|moved from|born in|from the town of|"
                 rf"town of|city of|village of)\s)(?P<v>{WORD}(?:\s{WORD})?)"),
    ("LOCATION", rf"\b{WORD}(?:\s{WORD})?\sCounty\b"),
]

TITLES = (r"(?:Mr|Mrs|Ms|Mx|Miss|Mister|Dr|Doctor|Prof|Professor|Pt|Sr|Fr|Rev|Nurse|Sister|Brother|Capt|"
          r"Sgt|Lt|Hon)")
CUES = (r"(?:patient|pt|name|named|name is|called|son|daughter|wife|husband|mother|father|brother|sister|"
        r"spouse|partner|guardian|caregiver|contact|signed by|seen by|referred by|attending|physician|provider|"
        r"nurse|surgeon|resident|intern)")
NAME_RUN = rf"(?P<v>(?!{TITLES}\b)(?:[A-Z]\.\s?)?{WORD}(?:\s(?:[A-Z]\.\s?)?{WORD}){{0,2}})"
NAME_PATTERNS: list[tuple[str, str]] = [
    ("NAME", rf"\b{TITLES}\.?\s{NAME_RUN}"),
    ("CUED_NAME", rf"(?i:\b(?P<cue>{CUES})\b[\s,:]{{1,3}}){NAME_RUN}"),
]
# A capitalized word that is also an ordinary or clinical word is a name only next to another name
AMBIGUOUS = frozenset("""Will May June April August Grace Hope Faith Joy Mark Bill Art Rose Summer Dawn Iris Ivy
Jack Frank Gene Pat Ray Don Max Sandy Amber Hazel Ruby Pearl Olive Violet Lily Jade Christian Hunter Carter Mason
Parker Jordan Austin Chase Lane Long Young King Hill Wood Stone Price Hunt Ward Berry Fox Rice Mills Cook Black
Reports Presents Denies States Says Notes Complains Reported Was Is Has Had Will Says Today Yesterday
White Green Gray Bell Brooks Woods Wells Grant Little Page Ford Marshall Washington Cole Reed Love Dean Rich Henry
James Thomas Lawrence Alexander Kelly Russell Gordon Spencer Grayson Levi Luke Isaiah Aurora Stella Claire Avery
Harper Addison Penelope Jean Maria Lucia Carmen Rosa Cruz Rogers Murray Palmer Porter
Shaw Hart Knight Riley Perry Miller Baker Cooper Turner Carpenter Gardner Hunter Mason Fisher Powell Ross""".split())
EPONYM_NEXT = re.compile(r"(?:'s)?\s(?:disease|syndrome|sign|palsy|test|criteria|score|scale|classification|"
                         r"lymphoma|reflex|maneuver|manoeuvre|procedure|operation|fracture|ulcer|node|triad)\b", re.I)


@lru_cache(maxsize=1)
def name_lists() -> tuple[frozenset, frozenset]:
    first, last, into = set(), set(), None
    for line in (resources.files("sm70.serve") / "phi_names.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line == "[first]":
            into = first
        elif line == "[last]":
            into = last
        elif line and not line.startswith("#") and into is not None:
            into.update(line.split())
    return frozenset(first), frozenset(last)


def _names_in_runs(text: str) -> str:
    """Runs of capitalized words, kept unless a listed given name or surname makes them a name."""
    first, last = name_lists()

    def decide(m: re.Match) -> str:
        words = list(re.finditer(WORD, m.group(0)))
        names = [w.group(0) for w in words]
        for i, w in enumerate(names):
            nxt = names[i + 1] if i + 1 < len(names) else None
            sure_first = w in first and w not in AMBIGUOUS                      # "Olivia", "Robert Brown"
            before_surname = nxt is not None and nxt in last and nxt not in AMBIGUOUS   # "Xavier Nguyen"
            pair = nxt is not None and w in first and (nxt in last or nxt in first) and (
                w not in AMBIGUOUS or nxt not in AMBIGUOUS)                     # "Grace Lee"
            if sure_first or before_surname or pair:
                if nxt is None and EPONYM_NEXT.match(text, m.end()):
                    return m.group(0)          # "Addison disease", "Charles Bonnet syndrome" stay
                return m.group(0)[:words[i].start()] + "[NAME]"
        return m.group(0)

    # "Smith, John": a surname, a comma and a given name
    text = re.sub(rf"(?<![\w'\-]){WORD},\s{WORD}(?![\w'\-])",
                  lambda m: "[NAME]" if m.group(0).split(",")[0] in last and m.group(0).split()[-1] in first
                  else m.group(0), text)
    run = rf"(?<![\w'\-\[]){WORD}(?:\s{WORD}){{0,2}}(?![\w'\-\]])"
    return re.sub(run, decide, text)


def _replacer(label: str) -> Callable[[re.Match], str]:
    def replace(m: re.Match) -> str:
        if label == "CUED_NAME":
            # after a lowercase cue ("his wife Tamsin") a capital means a name; after "Patient" at the
            # start of a sentence it may be Title Case ("Patient Reports"): one listed word is not enough
            first, last = name_lists()
            words = m.group("v").split()
            if m.group("cue")[0].isupper() and len(words) == 1 and words[0] not in first | last:
                return m.group(0)
            if words[0] in AMBIGUOUS and len(words) == 1:
                return m.group(0)
            return m.group(0)[: m.start("v") - m.start()] + "[NAME]"
        if "v" in m.re.groupindex and m.group("v") is not None:
            s, e = m.span("v")
            return m.group(0)[: s - m.start()] + f"[{label}]" + m.group(0)[e - m.start():]
        return f"[{label}]"

    return replace


class Scrubber:
    def __init__(self, extra: Iterable[str] = ()):
        self.patterns = [(label, re.compile(rx)) for label, rx in DEFAULT_PATTERNS + NAME_PATTERNS]
        for i, rx in enumerate(extra):
            try:
                self.patterns.append(("REDACTED", re.compile(rx)))
            except re.error as e:
                raise Sm70Error(f"phi_patterns.{i}: {rx!r} is not a valid regular expression ({e})") from None
        # bare numbers last: by then every cued or formatted number has its own label
        self.tail = [("SSN", re.compile(rf"{B}\d{{9}}{E}")), ("PHONE", re.compile(rf"{B}\d{{10}}{E}"))]

    def __call__(self, text: str) -> str:
        for label, rx in self.patterns:
            text = rx.sub(_replacer(label), text)
        text = _names_in_runs(text)
        for label, rx in self.tail:
            text = rx.sub(f"[{label}]", text)
        return text
