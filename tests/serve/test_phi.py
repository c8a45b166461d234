"""The PHI scrubber on a table of identifiers, and on clinical text it must leave alone."""

import pytest

from sm70.serve.phi import Scrubber

CASES = [
    ("Contact me at jane.doe@hospital.org today", "Contact me at [EMAIL] today"),
    ("Call 555-123-4567 after rounds", "Call [PHONE] after rounds"),
    ("Phone (555) 123-4567", "Phone [PHONE]"),
    ("International +1 555 123 4567", "International [PHONE]"),
    ("Admitted on 03/14/2023 with fever", "Admitted on [DATE] with fever"),
    ("Seen 2024-01-05 in clinic", "Seen [DATE] in clinic"),
    ("Born March 3, 1961 in Ohio", "Born [DATE] in Ohio"),
    ("Surgery on 12 Jan 2022", "Surgery on [DATE]"),
    ("MRN: 00123456 was reviewed", "[MRN] was reviewed"),
    ("medical record number A1234567 on file", "[MRN] on file"),
    ("SSN 123-45-6789 on the form", "SSN [SSN] on the form"),
    ("Lives at 42 Oak Street near the park", "Lives at [ADDRESS] near the park"),
    ("zip 90210 area", "zip [ZIP] area"),
    ("Mr. John Smith presented with chest pain", "Mr. [NAME] presented with chest pain"),
    ("Dr Alice Wong ordered a CT", "Dr [NAME] ordered a CT"),
    ("Patient Maria Lopez, 54, diabetic", "Patient [NAME], 54, diabetic"),
    ("server at 10.0.12.7 logged it", "server at [IP] logged it"),
    ("see https://portal.example.com/chart?id=9", "see [URL]"),
    ("name: Peter Parker", "name: [NAME]"),
]

UNTOUCHED = [
    "A 45-year-old man with BP 150/90 mmHg and HR 110 bpm.",
    "Give 0.5 mg/kg IV every 6 hours; recheck potassium at 4.2 mmol/L.",
    "The patient presents with a 3-day history of cough.",
    "Which of the following is the most likely diagnosis? A. Sepsis B. Pneumonia",
]


@pytest.mark.parametrize("text, expected", CASES)
def test_identifiers_are_replaced(text, expected):
    assert Scrubber()(text) == expected


@pytest.mark.parametrize("text", UNTOUCHED)
def test_clinical_text_is_kept(text):
    assert Scrubber()(text) == text


def test_extra_patterns_from_config():
    scrub = Scrubber([r"\bWARD-\d+\b"])
    assert scrub("moved to WARD-12 overnight") == "moved to [REDACTED] overnight"
