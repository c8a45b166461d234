"""USMLE self-assessment (sample exam) Steps 1-3 in the medAlpaca layout: `stepN.json` (a list of
`{no, question, options}`) and `stepN_solutions.json` (`{"no": letter}`); ids are "stepN-no".

The files come from PDF extraction and carry defects (../shared/data/usmle_self_assessment/PROVENANCE.md).
Each kind is detected by a rule, never by a list of question numbers, so a re-extracted file is
judged the same way: an item that cannot be scored fairly is kept with `excluded` set to the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from sm70.errors import Sm70Error
from sm70.eval.tasks.item import Item
from sm70.eval.tasks.source import field, read_json
from sm70.samples import sample_path
from sm70.textfile import InputError

# A sentence that points at a picture the text does not hold ("A photomicrograph ... is shown",
# "the findings in the photograph", "labeled arteries in the diagram", "the rash shown").
VISUALS = (r"photographs?|photomicrographs?|micrographs?|graphs?|diagrams?|figures?|images?|x-rays?|MRI|"
           r"CT scans?|ECG|electrocardiograms?|pedigree|tracing|arteriograms?|findings|rash|lesion|wound")
IMAGE_REFERENCE = re.compile(
    rf"\b(?:{VISUALS})\b[^.?:\n]{{0,80}}\b(?:is|are|and) shown\b"
    r"|\b(?:in|from|on) the (?:graph|photograph|diagram|figure|image|advertisement)s?\b"
    rf"|\b(?:{VISUALS}) shown\b(?!\s*:)",
    re.IGNORECASE)
TABLE_REFERENCE = re.compile(r"\b(?:in|shown in) the table\b|\bshown below\b|\bshown:", re.IGNORECASE)
# "shown: XXX": the extraction left a placeholder where the table was.
PLACEHOLDER = re.compile(r"\bXXX\b")
# An option that ran on into the next option ("\n\nAnswer E: ...") or the next question.
NEXT_OPTION = re.compile(r"\n\s*(?:Answer\s+[A-Z]\s*:|\(?[A-Z][.)]\s)")
NEXT_QUESTION = re.compile(r"\n\s*(?:Question\s*:|A\s+\d+-(?:year|month|week|day)-old\b)")
EMBEDDED_OPTION = re.compile(r"^\s*([A-Z])[.)]\s*(.+?)\s*$", re.MULTILINE)


def resolve(path: Path | None, step: int) -> tuple[Path, Path]:
    folder = sample_path("usmle") if path is None else path
    if folder.is_file():
        folder = folder.parent
    return folder / f"step{step}.json", folder / f"step{step}_solutions.json"


def load(path: Path | None = None, steps: tuple[int, ...] = (1, 2, 3), include_images: bool = False) -> list[Item]:
    items: list[Item] = []
    for step in steps:
        items += load_step(path, step, include_images)
    return items


def load_step(path: Path | None, step: int, include_images: bool) -> list[Item]:
    questions_file, solutions_file = resolve(path, step)
    records = read_json(questions_file)
    if not isinstance(records, list):
        raise Sm70Error(f"{questions_file}: expected a list of questions, got {type(records).__name__}")
    solutions = read_json(solutions_file)
    if not isinstance(solutions, dict):
        raise Sm70Error(f"{solutions_file}: expected an object number -> letter, got {type(solutions).__name__}")
    if not records:
        raise InputError(str(questions_file), "no questions (an empty list)")
    items = []
    first: dict[int, int] = {}  # question number -> the record that has it
    for index, record in enumerate(records):
        where = f"{questions_file}: record {index}"
        if not isinstance(record, dict):
            raise InputError(where, f"expected an object, got {type(record).__name__}")
        no = field(record, "no", int, where)
        if no in first:
            raise InputError(where, f"question {no} appears twice (records {first[no]} and {index})", "no")
        first[no] = index
        where = f"{questions_file}: record {index} (no {no})"
        options = field(record, "options", dict, where)
        for key in options:
            field(options, key, str, where, f"options.{key}")
        if str(no) not in solutions:
            raise InputError(str(solutions_file), f"no answer for question {no} of {questions_file.name}", str(no))
        gold = field(solutions, str(no), str, str(solutions_file))
        items.append(build_item(step, no, field(record, "question", str, where), options, gold.strip(),
                                record, include_images))
    extra = set(solutions) - {str(no) for no in first}
    if extra:
        raise InputError(str(solutions_file), f"answers for questions not in {questions_file.name}: {sorted(extra)}")
    return items


def build_item(step: int, no: int, question: str, options: dict[str, str], gold: str, record: dict,
               include_images: bool) -> Item:
    # Extraction left leading ". " debris and trailing newlines around stems and options.
    question = re.sub(r"^[\s.]+(?=\S)", "", question).strip()
    options = {k: v.strip() for k, v in options.items()}
    meta: dict = {"step": step, "no": no}
    if not options:
        # The choices sit inside the stem as "A.\t..." lines: recover them when they run A, B, C, ...
        embedded = EMBEDDED_OPTION.findall(question)
        letters = [k for k, _ in embedded]
        if len(embedded) >= 2 and letters == [chr(ord("A") + i) for i in range(len(letters))]:
            question = question[:question.find(embedded[0][1]) ].rstrip()
            question = re.sub(r"\s*A[.)]\s*$", "", question).strip()
            options = dict(embedded)
            meta["repaired"] = "options recovered from the question text"
    image = image_reason(question, record)
    if image and include_images:
        meta["image"] = image
        image = None
    reason = image or defect(question, options, gold)
    return Item(id=f"step{step}-{no}", question=question, options=options, gold=gold, excluded=reason, meta=meta)


def image_reason(question: str, record: dict) -> str | None:
    if record.get("image") or record.get("image_url"):
        return "image question (the record has an image field)"
    match = IMAGE_REFERENCE.search(question)
    if match:
        return f"refers to an image that is not in the text ({match.group(0)!r})"
    if PLACEHOLDER.search(question):
        return "refers to a table that is not in the text (placeholder 'XXX')"
    # A table that made it into the text shows up as numbers right after one of its references.
    references = list(TABLE_REFERENCE.finditer(question))
    if references and all(len(re.findall(r"\d+", question[m.end():m.end() + 400])) < 3 for m in references):
        return "refers to a table that is not in the text"
    return None


def defect(question: str, options: dict[str, str], gold: str) -> str | None:
    if not options:
        return "no options (the choices are embedded in the question text and could not be recovered)"
    for key, text in options.items():
        if not text:
            return f"option {key} is empty"
        if NEXT_QUESTION.search(text):
            return f"option {key} swallowed the next question"
        if NEXT_OPTION.search(text):
            return f"option {key} swallowed the next option"
    if gold not in options:
        return f"gold letter {gold!r} is not among the options {list(options)}"
    return None
