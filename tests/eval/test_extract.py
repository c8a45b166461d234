"""The answer extractor on replies shaped like real model outputs (greedy, chat, chain of thought)."""

import pytest

from sm70.eval.extract import extract_answer

MCQ = {"A": "Insulin", "B": "Metformin", "C": "Insulin glargine", "D": "Beta blocker"}
MCQ5 = {"A": "Vitamin B12 deficiency", "B": "Folate deficiency", "C": "Iron deficiency",
        "D": "Lead poisoning", "E": "Thalassemia trait"}
YNM = {"yes": "yes", "no": "no", "maybe": "maybe"}

CASES = [
    # bare letters and their usual decorations
    ("B", MCQ, "B"),
    ("(B)", MCQ, "B"),
    ("B.", MCQ, "B"),
    (" b ", MCQ, "B"),
    ("**C**", MCQ, "C"),
    ("**C.** Insulin glargine lowers fasting glucose.", MCQ, "C"),
    ("B) Metformin", MCQ, "B"),
    ("D. Beta blocker, because the patient has stable angina.", MCQ, "D"),
    # explicit statements
    ("Answer: B", MCQ, "B"),
    ("The answer is B) Metformin", MCQ, "B"),
    ("The correct answer is (D).", MCQ, "D"),
    ("I would choose option D because it reduces mortality after infarction.", MCQ, "D"),
    ("I think the answer is A because the patient has type 1 diabetes.", MCQ, "A"),
    ("Final answer: c", MCQ, "C"),
    ("the answer is b.", MCQ, "B"),
    ("Option C is correct.", MCQ, "C"),
    ("E is the best answer given the microcytosis and normal RDW.", MCQ5, "E"),
    # option text alone or inside a sentence
    ("Metformin", MCQ, "B"),
    ("metformin.", MCQ, "B"),
    ("The most appropriate treatment is metformin.", MCQ, "B"),
    ("The answer is a beta blocker.", MCQ, "D"),
    ("Insulin glargine would be my choice here.", MCQ, "C"),  # longer text hides "insulin"
    ("The answer is vitamin B12 deficiency", MCQ5, "A"),  # "B12" is not the letter B
    # chain of thought: the last commitment counts
    ("Let's think step by step. Insulin (A) is reasonable, but the patient is obese with a "
     "new diagnosis. Metformin is first line. So the answer is B.", MCQ, "B"),
    ("A. Wait, that ignores the renal failure. The answer is therefore C.", MCQ, "C"),
    ("<think>Could be A or B... lab values favour folate.</think>\nAnswer: B", MCQ5, "B"),
    ("The correct answer is C. Insulin glargine", MCQ, "C"),
    ("Answer: (C) Insulin glargine\nExplanation: Insulin (A) is less suitable here.", MCQ, "C"),
    ("Answer: C\n\nExplanation: the answer is not A because of the hypoglycaemia risk.", MCQ, "C"),
    ("Option B is incorrect because of lactic acidosis. The answer is D.", MCQ, "D"),
    # yes / no / maybe
    ("The study found no significant difference, so the answer is no.", YNM, "no"),
    ("Yes, the cohort shows a lower mortality with early surgery.", YNM, "yes"),
    ("More research is needed before concluding. Maybe.", YNM, "maybe"),
    ("Yes", YNM, "yes"),
    ("yes.", YNM, "yes"),
    ("No, the trial did not show a benefit.", YNM, "no"),
    ("MAYBE", YNM, "maybe"),
    ("Based on the abstract, the answer is: Maybe.", YNM, "maybe"),
    ("The evidence is mixed; however, the final answer is yes", YNM, "yes"),
    ("**No**", YNM, "no"),
    # nothing, or more than one different answer, must give None
    ("", MCQ, None),
    ("   ", MCQ, None),
    ("I cannot answer this question without more information.", MCQ, None),
    ("I'm unable to determine this from the vignette; metformin might help.", MCQ, None),
    ("A and B are both plausible.", MCQ, None),
    ("The answer is either A or B.", MCQ, None),
    ("The answer is A or B", MCQ, None),
    ("Metformin or insulin could both be used here.", MCQ, None),
    ("The answer is F.", MCQ, None),  # a letter that is not an option
    ("A 45-year-old man presents with chest pain.", MCQ, None),  # the article, not option A
    ("I think this is a hard question.", MCQ, None),
    ("Yes and no, it depends.", YNM, None),
    ("I don't know.", YNM, None),
    ("No idea, sorry.", YNM, None),
    ("The abstract does not address this question.", YNM, None),
]


@pytest.mark.parametrize("text,choices,expected", CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_extract_answer(text, choices, expected):
    assert extract_answer(text, choices) == expected


def test_table_is_large_enough_and_covers_failures():
    assert len(CASES) >= 30
    assert sum(expected is None for _, _, expected in CASES) >= 10


def test_keys_are_returned_as_given():
    assert extract_answer("answer: b", {"a": "x", "b": "y"}) == "b"


def test_empty_options_are_ignored():
    # Defective USMLE items can carry empty option texts; an empty text must not match everything.
    assert extract_answer("The answer is Lead poisoning", {"A": "", "B": "Lead poisoning"}) == "B"
    assert extract_answer("Nothing here", {"A": "", "B": "Lead poisoning"}) is None
