"""Patterns for the structured identifiers of HIPAA Safe Harbor, in US and international formats.

Names are not here (names.py finds them); everything with a shape is: places smaller than a state
(street addresses, PO boxes, postcodes, towns after a cue, counties), every date element but the
year, ages over 89, phone and fax numbers, e-mail, SSN and national numbers, record, account,
health-plan, licence, vehicle and device numbers, URLs, IP addresses, and any other number given
with an identifier cue. Clinical numbers must survive: doses, lab values, vitals, ICD and CPT codes.

Every pattern runs in linear time: a match can only start where a token starts (a lookbehind
forbids starting inside one) and every repetition is bounded, so no input makes a pattern retry
from every position (an e-mail pattern without the lookbehind took seconds on 40K characters of
"word.").
"""

from __future__ import annotations

import re

MONTHS = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?|"
          # French, Spanish, Italian, Portuguese, German: "3 mars 2021", "5 de mayo", "14. März"
          r"janvier|février|fevrier|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre|décembre|"
          r"enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre|"
          r"gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|"
          r"janeiro|fevereiro|março|maio|junho|julho|setembro|outubro|novembro|dezembro|"
          r"Januar|Februar|März|Juni|Juli|Oktober|Dezember|mars)")
STATES = (r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|"
          r"NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|ON|QC|BC|AB|MB|SK|NS|NB|NL|PE|"
          r"NSW|VIC|QLD|WA|SA|TAS|ACT|NT)")
STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
          r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Mews|Gardens|Grove|"
          r"Hill|Walk|Green|Park|Rise|Parade|Esplanade|Quay|Wharf|Gate|View|Vale|Yard|Broadway)")
# street words that come before the name: "12 rue de Rivoli", "Via Roma 15", "Calle Mayor 5"
STREET_FIRST = (r"(?:rue|avenue|av|bd|boulevard|allée|allee|chemin|impasse|quai|place|cours|route|passage|"
                r"calle|avenida|avda|plaza|paseo|carrera|camino|via|viale|piazza|corso|largo|vicolo|"
                r"rua|praça|praca|travessa|estrada|alameda|ulica|ul|straat|laan|weg|gracht|plein|"
                r"Rue|Avenue|Av|Bd|Boulevard|Allée|Chemin|Impasse|Quai|Place|Cours|Route|Calle|Avenida|Plaza|"
                r"Paseo|Carrera|Via|Viale|Piazza|Corso|Largo|Rua|Praça|Travessa|Estrada|Alameda|Ulica|Ul)")
STREET_NAMED = (r"(?:Rue|Avenue|Calle|Avenida|Via|Viale|Piazza|Corso|Rua|Praça|Plaza|Paseo|Carrera|Ulica|Travessa|"
                r"Estrada|Alameda|Largo)")
PARTICLE = r"(?:de|du|des|de la|del|della|di|da|do|dos|das|von|van|der|den|la|le|les|el|al)"
WORD = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ][a-zß-öø-ÿ'\-]{0,30}"
# a unit after "100-1000" makes it a dose or a range, not a local phone number
UNIT = (r"(?!\s?(?:mg|mcg|ug|µg|g\b|kg|ml|mL|L\b|units?|U\b|IU|iu|mmol|mEq|meq|%|/|mm|cm|hours?|h\b|days?|"
        r"min|x\b|weeks?|months?|years?|times|cells|copies|ng|pg|bpm|mmHg))")
B = r"(?<![\w@.+-])"     # a match starts only where a token starts
E = r"(?![\w@])"
NUMBER_CUE = r"(?:\s?(?:(?:number|no\.?|nr\.?|num\.?|id)(?![a-z])|#|n°))?"
# words after which a town is named: "lives in Reading", "transferred from Lagos"
TOWN_CUES = (r"lives in|living in|lived in|resides in|resident of|moved from|moved to|born in|from the town of|town of|"
             r"city of|village of|hometown|native of|travell?ed to|returned from|transferred from|transferred to|"
             r"admitted from|discharged to|flew in from|moved here from|visiting from|originally from")
# an identifier after a cue: one token holding a digit, maybe followed by groups of digits ("943 476 5919")
ID_VALUE = r"(?=[A-Za-z0-9-]{0,24}\d)[A-Za-z0-9][A-Za-z0-9-]{0,24}(?: \d{2,5}){0,4}(?![\w-])" + UNIT
LONG_ID = r"(?=[A-Za-z0-9-]{3,24}(?![\w-]))" + ID_VALUE       # after a weak cue ("group", "plan"): four or more
GROUPS = r"(?=[A-Z0-9 ]{0,8}\d)[A-Z0-9]{1,6}(?:[ .-]\d[A-Z0-9]{0,6}){0,7}(?![\w-])"


def cued(cue: str, value: str) -> str:
    """`value` after `cue` (and "number", "no.", "#"), the cue kept: "MRN: [MRN]"."""
    return rf"{initials(cue)}(?i:\b(?:{cue})(?![a-z]){NUMBER_CUE})[\s:#]{{0,3}}(?P<v>{value})"


def initials(alternatives: str) -> str:
    """A lookahead on the letters the alternatives can start with. Python's re tries every alternative
    of a case-insensitive list at every position; one character class first makes most positions fail
    at once (the cue patterns ran about 3x faster)."""
    firsts = _firsts(alternatives)
    letters = "".join(sorted({c for f in firsts or () for c in (f.lower(), f.upper())}))
    return f"(?=[{letters}])" if firsts else ""


def _firsts(rx: str) -> set[str] | None:
    """The first letters of a regex made of literal words, groups and `|`; None where it is not that."""
    alts, depth, at = [], 0, 0
    for i, c in enumerate(rx):                # split at the top level only
        depth += (c == "(") - (c == ")")
        if c == "|" and depth == 0:
            alts.append(rx[at:i])
            at = i + 1
    out: set[str] = set()
    for alt in alts + [rx[at:]]:
        if m := re.match(r"\(\?[-a-z]*:", alt):            # a group first: its own first letters
            depth, i = 1, m.end()
            while depth and i < len(alt):
                depth += (alt[i] == "(") - (alt[i] == ")")
                i += 1
            inner = _firsts(alt[m.end():i - 1])
            if inner is None:
                return None
            out |= inner
        elif alt[:1].isalpha():
            out.add(alt[0])
        else:
            return None
    return out


# (label, pattern); a pattern with a group named `v` replaces only that group (the cue stays)
PATTERNS: list[tuple[str, str]] = [
    ("EMAIL", rf"{B}[\w.+-]{{1,64}}@[\w-]{{1,63}}(?:\.[\w-]{{1,63}}){{1,8}}"),
    ("URL", r"(?<![\w/])(?:https?://|ftp://|www\.)[^\s<>\"']{0,2000}[^\s<>\"'.,;:)\]]"),
    ("URL", rf"{B}(?:[a-z0-9-]{{1,63}}\.){{1,6}}(?:com|org|net|edu|gov|io|us|uk|info|health|nhs|fr|de|ca|au|in|"
            rf"nl|es|it|ie|jp|br|ng|za|ch|be|se|no|dk|nz|sg)(?:/[^\s<>\"']{{0,2000}}[^\s<>\"'.,;:)\]])?{E}"),
    ("IP", rf"{B}(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1?\d?\d){E}"),
    ("IP", r"(?i)(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}"
           r"(?::[0-9a-f]{1,4}){0,6})?|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}))(?![\w:])"),
    ("IP", r"(?i)(?<![\w:-])(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}(?![\w:-])"),             # MAC address
    ("SSN", rf"{B}\d{{3}}[- ]\d{{2}}[- ]\d{{4}}{E}"),
    ("SSN", cued(r"SSN|SS#|SIN|social (?:security|insurance)|NI|national insurance|NIR|INSEE|"
                 r"s[ée]curit[ée] sociale|aadhaar|CPF|BSN|PESEL|personnummer|TFN|tax file|national id(?:entity)?",
                 GROUPS)),
    ("SSN", rf"{B}[A-Z]{{2}} ?\d{{2}} ?\d{{2}} ?\d{{2}} ?[A-D]{E}"),   # UK National Insurance
    ("MRN", cued(r"MRN|MR ?#|medical record|NHS|CHI|RN|IPP|NIP|dossier|FIN|CSN|accession|(?:record|chart|patient|"
                 r"case|encounter|hospital|unit|admission|visit|specimen|lab)\s?(?:number|no\.?|#|id)", ID_VALUE)),
    ("ACCOUNT", cued(r"acct|account|billing|invoice|IBAN|card", GROUPS)),
    ("ACCOUNT", cued(r"acct|account|billing|invoice|IBAN|card", ID_VALUE)),
    ("ACCOUNT", rf"{B}[A-Z]{{2}}\d{{2}}(?: ?[A-Z0-9]{{4}}){{2,7}}(?: ?[A-Z0-9]{{1,3}})?{E}"),   # IBAN
    ("ACCOUNT", cued("IBAN", r"[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?(?![\w-])")),
    ("ACCOUNT", rf"{B}\d{{4}}[ -]\d{{4}}[ -]\d{{4}}[ -]\d{{1,4}}{E}"),                          # card numbers
    ("HEALTH_PLAN", cued(r"member|subscriber|beneficiary|insurance|insurer|policy|group|health plan|medicare|"
                         r"medicaid|MBI|HICN|plan|carte vitale|EHIC|Versichertennummer|tarjeta sanitaria|CIP",
                         LONG_ID)),
    ("HEALTH_PLAN", rf"{B}[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?"
                    rf"[AC-HJKMNP-RT-Y]{{2}}\d{{2}}{E}"),                       # Medicare MBI
    ("ID", cued(r"NPI|DEA|licen[cs]e|certificate|passport|driver'?s licen[cs]e|(?-i:DL)|permis|GMC|NMC|AHPRA|"
                r"registration|badge|employee|staff|ID|identifier|reference|ref|número|numéro", LONG_ID)),
    ("VEHICLE", cued(r"VIN|licen[cs]e plate|number plate|plate|registration plate|reg\.?|immatriculation",
                     r"(?=[A-Za-z0-9 -]{0,12}\d)[A-Za-z0-9]{1,4}(?:-?[A-Za-z0-9]{1,4}| [A-Z0-9]{1,4}){1,3}(?![\w-])")),
    ("VEHICLE", rf"{B}(?=[A-HJ-NPR-Z0-9]{{0,16}}\d)(?=[A-HJ-NPR-Z0-9]{{0,16}}[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{{17}}{E}"),
    ("DEVICE", cued(r"serial|S/N|SN|device|UDI|IMEI|implant|model|lot|MAC",
                    r"(?=[A-Za-z0-9()-]{0,40}\d)[A-Za-z0-9(][A-Za-z0-9()-]{2,39}[A-Za-z0-9](?![\w-])")),
    # phones: a cue makes any run of digit groups a phone; without one, the shapes below
    ("PHONE", cued(r"tel|t[ée]l[ée]?phone|phone|cell|mobile|mob|portable|fax|pager|bleep|beeper|contact|call|"
                   r"telefono|teléfono|telefone|handy", r"\+?\(?\d[\d ().-]{5,22}\d(?!\w)")),
    ("PHONE", rf"(?<![\w+]){B}(?:\+?1[\s.-]?)?(?:\(\d{{3}}\)\s?|\d{{3}}[\s.-])\d{{3}}[\s.-]\d{{4}}{E}"),
    ("PHONE", rf"(?<![\w+])\+\d{{1,3}}(?:[\s.-]?(?:\(\d{{1,4}}\)|\d{{1,8}})){{2,6}}{E}"),
    # national formats with a trunk 0: "020 7946 0958", "07700 900123", "01 42 68 53 00", "(02) 9876 5432"
    ("PHONE", rf"{B}(?:0\d{{1,4}}|\(0\d{{1,4}}\))(?:[\s.-]\d{{2,4}}){{2,4}}{E}{UNIT}"),
    ("PHONE", rf"{B}0\d{{3,4}}[\s.-]\d{{6,7}}{E}{UNIT}"),
    ("PHONE", rf"{B}\d{{3}}-\d{{4}}{E}{UNIT}"),
    ("DATE", rf"{B}(?:\d{{1,2}}[/-]\d{{1,2}}[/-](?:\d{{4}}|\d{{2}})|\d{{1,2}}\.\d{{1,2}}\.(?:\d{{4}}|\d{{2}})|"
             rf"\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}(?:T\d{{2}}:\d{{2}}(?::\d{{2}})?)?){E}(?!\.\d)"),
    # day first and month first apart: one pattern with both alternatives retried the month list everywhere
    ("DATE", rf"\b\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?[\s-](?:of\s|de\s)?(?i:{MONTHS})\.?(?:,?[\s-](?:de\s)?\d{{2,4}})?\b"),
    ("DATE", rf"\b{initials(MONTHS[3:-1])}(?i:{MONTHS})\.?(?:\s(?:the\s)?\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s\d{{4}})?|,?\s(?:of\s)?\d{{4}})\b"),
    ("DATE", r"(?i:\b(?:on|since|dated|until|seen)\s)(?P<v>\d{1,2}/\d{1,2})(?![\d/])(?!\s?(?:tablet|strength|dose|of|mmHg))"),
    ("AGE", r"(?i)\b(?:age[d]?|aged|âge|edad|età|alter)[\s:]{1,3}(?P<v>(?:9\d|1[0-2]\d))\b"),
    ("AGE", r"(?i)\b(?P<v>(?:9\d|1[0-2]\d))(?=[\s-]{0,2}(?:years?|yrs?|yo\b|y/o|y\.o\.|-year-old|year-old|ans\b|"
            r"años|anni|jahre|[MF]\b))"),
    ("AGE", r"(?i)\b(?P<v>(?:ninety|one hundred|a hundred)(?:[\s-](?:one|two|three|four|five|six|seven|eight|nine))?)"
            r"(?=[\s-](?:years?|-year-old|year-old|yo\b))"),
    ("ADDRESS", rf"\b\d{{1,6}}[A-Za-z]?,?\s(?:[NSEW]\.?\s)?(?:\d{{1,3}}(?:st|nd|rd|th)|{WORD})(?:\s{WORD}){{0,3}}"
                rf"\s{STREET}\b\.?(?:,?\s(?:Apt|Apartment|Unit|Suite|Ste|Flat|Floor|#)\.?\s?[A-Z0-9-]{{1,8}})?"),
    ("ADDRESS", rf"\b\d{{1,5}}[A-Za-z]?(?:\s?bis|\s?ter)?,?\s{STREET_FIRST}\.?\s(?:{PARTICLE}\s|d'|l')?"
                rf"{WORD}(?:[\s-](?:{PARTICLE}\s)?{WORD}){{0,3}}"),
    ("ADDRESS", rf"\b{STREET_NAMED}\.?\s(?:{PARTICLE}\s|d'|l')?{WORD}(?:[\s-](?:{PARTICLE}\s)?{WORD}){{0,3}},?\s"
                rf"\d{{1,5}}[A-Za-z]?\b"),
    ("ADDRESS", rf"\b{WORD}(?:stra(?:ss|ß)e|str\.|weg|allee|platz|gasse|damm|straat|laan|gracht|vej|gatan|"
                rf"gata|veien)\s\d{{1,5}}[a-z]?\b"),
    # lower-case notes: "42 oak street", "12 rue de rivoli" (only street words no clinical phrase ends on)
    ("ADDRESS", r"\b\d{1,6}[a-z]?,?\s(?:[a-zà-ÿ'-]{2,20}\s){1,3}(?:street|road|avenue|ave|boulevard|blvd|lane|"
                r"drive|terrace|crescent|parkway|highway|hwy|square)\b"),
    ("ADDRESS", r"\b\d{1,5}[a-z]?,?\s(?:rue|calle|avenida|rua|viale|piazza|corso)\s(?:(?:de|du|des|la|le|del|di|da|"
                r"do|d')\s?){0,2}[a-zà-ÿ'-]{2,30}(?:\s[a-zà-ÿ'-]{2,30})?"),
    ("ADDRESS", r"\b[a-zß-ÿ]{3,30}(?:straße|strasse|str\.|weg|allee|platz|gasse|gracht)\s\d{1,5}[a-z]?\b"),
    ("ADDRESS", r"\b(?:calle|avenida|rua|piazza|corso|rue|plaza|paseo|viale)\s(?:(?:de|del|di|da|do|la|le)\s){0,2}"
                r"[a-zà-ÿ'-]{2,30}(?:\s[a-zà-ÿ'-]{2,30})?,?\s\d{1,5}\b"),
    ("ADDRESS", r"(?i)\b(?:Flat|Apartment|Apt|Unit|Suite|Piso|Wohnung)\s\d{1,5}[A-Z]?(?=,)"),
    ("ADDRESS", r"(?i)\bP\.?\s?O\.?\s?Box\s\d{1,8}\b|\bCase postale\s\d{1,6}\b|\bApartado\s\d{1,6}\b"),
    ("ADDRESS", rf"\b{WORD}(?:\s{WORD})?,\s{STATES}\s\d{{5}}(?:-\d{{4}})?\b"),
    ("ZIP", rf"(?i:\b(?:zip(?: code)?|postal code|post ?code|code postal|PLZ|CEP|PIN code)[\s:#]{{0,3}})"
            rf"(?P<v>[A-Z0-9]{{3,5}}(?:[ -][A-Z0-9]{{3,4}})?)\b"),
    ("ZIP", rf"\b{STATES}\s(?P<v>\d{{5}}(?:-\d{{4}})?|[A-Z]\d[A-Z] \d[A-Z]\d|\d{{4}})\b"),
    ("ZIP", rf"{B}(?:[A-Z]{{1,2}}\d[A-Z\d]?|GIR) \d[ABD-HJLNP-UW-Z]{{2}}{E}"),            # UK
    ("ZIP", rf"{B}[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] \d[ABCEGHJ-NPRSTV-Z]\d{E}"),     # Canada
    ("ZIP", rf"{B}\d{{4}} ?[A-Z]{{2}}(?=\s{WORD})"),                                    # Netherlands
    ("ZIP", rf"{B}\d{{5}}-\d{{3}}{E}"),                                                 # Brazil
    ("ZIP", rf"(?<!CPT )(?<!ICD )(?<!code ){B}(?:[A-Z]-)?\d{{4,5}}(?=\s[A-ZÀ-Þ][a-zß-ÿ]{{2,}}(?:[\s,.]|$)(?!\s?(?:mg|units)))"),
    ("LOCATION", rf"{initials(TOWN_CUES)}(?i:\b(?:{TOWN_CUES})\s)(?P<v>{WORD}(?:[\s-](?:{PARTICLE}\s)?{WORD}){{0,2}})"),
    # the town typed in lower case: any word but the ones that follow these cues without naming a town
    ("LOCATION", rf"{initials(TOWN_CUES)}\b(?:{TOWN_CUES})\s(?P<v>(?!(?:the|a|an|his|her|their|our|home|hospital|icu|"
                 r"clinic|ward|rehab|nursing|work|school|surgery|another|outside|care|this|that|there|here)\b)"
                 r"[a-zà-ÿ][a-zà-ÿ'-]{2,30})"),
    ("LOCATION", rf"\b{WORD}(?:\s{WORD})?\s(?:County|Parish|Borough|Township|District|Province|Prefecture)\b"),
]
