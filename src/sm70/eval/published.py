"""Published accuracies that an `sm70 eval` run is placed beside, each with its setting and source.

Numbers are copied from the cited tables, not recomputed; a number is only comparable to ours
when the setting (shots, split, prompt style) matches, which is why every record carries it.
The SM70 paper's own scores (Bhatti et al. 2023, arXiv 2312.06974) are not listed: their table
could not be consulted from this machine, and a number is never written here from memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# The Clinical Camel table (also on the wanglab/ClinicalCamel-70B model card) collects the
# five-shot numbers of all four models; the GPT rows come from Nori et al. and Med-PaLM 2's
# from Singhal et al., cited here so a reader can go to the original.
CLINICAL_CAMEL = "Toma et al. 2023 (Clinical Camel), arXiv 2305.12031, Table 2"
NORI = f"{CLINICAL_CAMEL}, from Nori et al. 2023, arXiv 2303.13375"
MED_PALM_2 = f"{CLINICAL_CAMEL}, from Singhal et al. 2023 (Med-PaLM 2), arXiv 2305.09617"
MEDITRON = "Chen et al. 2023 (MEDITRON-70B), arXiv 2311.16079"

MEDQA_SPLIT = "MedQA-USMLE 4-option test (1,273)"
PUBMEDQA_SPLIT = "PubMedQA PQA-L, reasoning-required"
USMLE_SPLIT = "USMLE sample exam, Steps 1-3, image questions removed"


@dataclass(frozen=True)
class Published:
    model: str
    task: str          # one of our task names: medqa, pubmedqa, usmle, usmle_step1..3
    value: float       # accuracy in percent, as printed in the source
    shots: int | None  # None: the source's setting is not a few-shot prompt of ours; see note
    split: str
    source: str
    note: str = ""

    @property
    def setting(self) -> str:
        return f"{self.shots}-shot" if self.shots is not None else "setting: see source"

    def as_dict(self) -> dict:
        return asdict(self)


def _table(model: str, medqa: float, pubmedqa: float, usmle: float | None, source: str) -> list[Published]:
    rows = [Published(model, "medqa", medqa, 5, MEDQA_SPLIT, source),
            Published(model, "pubmedqa", pubmedqa, 5, PUBMEDQA_SPLIT, source)]
    if usmle is not None:
        rows.append(Published(model, "usmle", usmle, 5, USMLE_SPLIT, source))
    return rows


PUBLISHED: tuple[Published, ...] = (
    *_table("Clinical Camel-70B", 60.7, 77.9, None, CLINICAL_CAMEL),
    Published("Clinical Camel-70B", "usmle", 64.3, 5, USMLE_SPLIT, CLINICAL_CAMEL,
              note="325 items: bowang-lab/clinical-camel evaluation/step_exams.jsonl, from Kung et al. 2023"),
    *_table("GPT-3.5", 53.6, 60.2, 58.5, NORI),
    *_table("GPT-4", 81.4, 74.4, 86.6, NORI),
    *_table("Med-PaLM 2", 79.7, 79.2, None, MED_PALM_2),
    Published("Llama-2-70B", "medqa", 59.2, None, MEDQA_SPLIT, MEDITRON,
              note="the Meditron paper's own protocol, not the Clinical Camel table: check its "
                   "shots and fine-tuning before comparing"),
)


def published_for(task: str) -> list[Published]:
    """The comparators for one task (the pooled `usmle` task carries the sample-exam numbers)."""
    return [p for p in PUBLISHED if p.task == task]
