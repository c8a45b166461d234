"""The Medical Meadow subsets medAlpaca trains on: hub ids, data files, sizes and licences.

A recipe names a subset (`catalog: flashcards`) instead of repeating its hub id; with `path:` as
well, the same subset is read from a local copy of the file below. Licences are as the hub cards
and upstream sources state them; the data card copies them so a reader sees what they train on.
"""

from __future__ import annotations

from dataclasses import dataclass

from sm70.errors import Sm70Error


@dataclass(frozen=True)
class Subset:
    hub: str
    file: str      # the JSON file in the hub repository (a list of {instruction, input, output})
    rows: int      # as medAlpaca reports it
    licence: str
    note: str = ""


MEDICAL_MEADOW: dict[str, Subset] = {
    "flashcards": Subset("medalpaca/medical_meadow_medical_flashcards",
                         "medical_meadow_wikidoc_medical_flashcards.json", 33955,
                         "CC (hub card); Anki medical-school flashcards"),
    "wikidoc": Subset("medalpaca/medical_meadow_wikidoc", "medical_meadow_wikidoc.json", 10000,
                      "CC BY-SA 3.0 (WikiDoc content)"),
    "wikidoc_patient_information": Subset("medalpaca/medical_meadow_wikidoc_patient_information",
                                          "medical_meadow_wikidoc_patient_information.json", 5942,
                                          "CC BY-SA 3.0 (WikiDoc content)"),
    "health_advice": Subset("medalpaca/medical_meadow_health_advice", "medical_meadow_health_advice.json", 8676,
                            "as the hub card states; cite Yu et al., EMNLP 2019"),
    "pubmed_causal": Subset("medalpaca/medical_meadow_pubmed_causal", "medical_meadow_pubmed_causal.json", 2446,
                            "as the hub card states; cite Yu et al., COLING 2020"),
    "mmmlu": Subset("medalpaca/medical_meadow_mmmlu", "medical_meadow_mmmlu.json", 3787, "MIT (MMLU)",
                    "MMLU test questions: do not train on it when MMLU is an evaluation set"),
    "mediqa": Subset("medalpaca/medical_meadow_mediqa", "medical_meadow_mediqa.json", 2208,
                     "as the hub card states (MEDIQA 2019 shared task)"),
    "medqa": Subset("medalpaca/medical_meadow_medqa", "medical_meadow_medqa.json", 10178,
                    "MIT (MedQA, Jin et al. 2021)", "MedQA train material: decontaminate against MedQA test"),
    "cord19": Subset("medalpaca/medical_meadow_cord19", "medical_meadow_cord19.json", 821007,
                     "CORD-19 dataset licence (per-paper licences; Allen Institute for AI)"),
}


def subset(name: str) -> Subset:
    try:
        return MEDICAL_MEADOW[name]
    except KeyError:
        raise Sm70Error(f"catalog: unknown Medical Meadow subset {name!r}; known: {', '.join(MEDICAL_MEADOW)}") from None
