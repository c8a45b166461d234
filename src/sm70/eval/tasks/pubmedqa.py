"""PubMedQA, expert-labelled PQA-L in the reasoning-required setting (abstract + question ->
yes/no/maybe). `ori_pqal.json` holds the 1,000 labelled items; the official test split is the 500
PMIDs of `test_ground_truth.json` (lm-eval once scored all 1,000 by mistake: lm-eval issue 886).
`split=test` (default) gives those 500 in the ground-truth file's order, `train` the other 500,
`all` the 1,000 in `ori_pqal.json` order."""

from __future__ import annotations

from pathlib import Path

from sm70.errors import Sm70Error
from sm70.eval.tasks.item import Item
from sm70.eval.tasks.source import field, read_json, text, unscorable
from sm70.samples import sample_path
from sm70.textfile import InputError

ANSWERS = ("yes", "no", "maybe")
OPTIONS = {a: a for a in ANSWERS}


def resolve(path: Path | None) -> tuple[Path, Path]:
    folder = sample_path("pubmedqa") if path is None else path
    if folder.is_file():
        folder = folder.parent
    return folder / "ori_pqal.json", folder / "test_ground_truth.json"


def load(path: Path | None = None, split: str = "test") -> list[Item]:
    labelled_file, truth_file = resolve(path)
    labelled = read_json(labelled_file)
    if not isinstance(labelled, dict):
        raise Sm70Error(f"{labelled_file}: expected an object PMID -> record, got {type(labelled).__name__}")
    truth = read_json(truth_file)
    if not isinstance(truth, dict):
        raise Sm70Error(f"{truth_file}: expected an object PMID -> yes/no/maybe, got {type(truth).__name__}")
    for file, records in ((labelled_file, labelled), (truth_file, truth)):
        if not records:
            raise InputError(str(file), "no items (an empty object)")
    for pmid, answer in truth.items():
        if pmid not in labelled:
            raise Sm70Error(f"{truth_file}: PMID {pmid}: not in {labelled_file.name}")
        if answer not in ANSWERS:
            raise Sm70Error(f"{truth_file}: PMID {pmid}: answer {answer!r} is not yes, no or maybe")
        if isinstance(labelled[pmid], dict) and labelled[pmid].get("final_decision") != answer:
            raise Sm70Error(f"{truth_file}: PMID {pmid}: answer {answer!r} disagrees with final_decision "
                            f"{labelled[pmid].get('final_decision')!r} in {labelled_file.name}")
    if split == "test":
        pmids = list(truth)
    elif split == "train":
        pmids = [p for p in labelled if p not in truth]
    elif split == "all":
        pmids = list(labelled)
    else:
        raise Sm70Error(f"pubmedqa: split: unknown split {split!r}; use test, train or all")
    return [item(pmid, labelled[pmid], f"{labelled_file}: PMID {pmid}") for pmid in pmids]


def item(pmid: str, record: dict, where: str) -> Item:
    if not isinstance(record, dict):
        raise Sm70Error(f"{where}: expected an object, got {type(record).__name__}")
    contexts = field(record, "CONTEXTS", list, where)
    for i, part in enumerate(contexts):
        if not isinstance(part, str):
            raise InputError(where, f"expected str, got {type(part).__name__}", f"CONTEXTS[{i}]")
        text(part, where, f"CONTEXTS[{i}]")
    gold = field(record, "final_decision", str, where)
    if gold not in ANSWERS:
        raise InputError(where, f"{gold!r} is not yes, no or maybe", "final_decision")
    question = field(record, "QUESTION", str, where)
    excluded = unscorable(question, {}) or (None if any(c.strip() for c in contexts) else "the abstract is empty")
    return Item(id=pmid, question=question, options=dict(OPTIONS), gold=gold, context=tuple(contexts),
                excluded=excluded, meta={"year": record.get("YEAR")})
