"""Training fixtures: small train/val jsonl files in the data stage's format, written by us."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sm70.render import apply_template, mc_letter_completion, render_mc

# (question, options, answer letter): short, real-looking MedQA-style items.
MC_ITEMS = [
    ("A 54-year-old man has crushing chest pain radiating to the left arm. Which enzyme rises first?",
     ["Troponin I", "Lipase", "Amylase", "Alkaline phosphatase"], "A"),
    ("Which vitamin deficiency causes scurvy?", ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"], "B"),
    ("First-line treatment for anaphylaxis?", ["Oral cetirizine", "IV fluids only", "Intramuscular epinephrine",
                                               "Inhaled salbutamol"], "C"),
    ("Which organism most often causes community-acquired pneumonia in adults?",
     ["Klebsiella", "Legionella", "Mycoplasma", "Streptococcus pneumoniae"], "D"),
    ("A child has a barking cough and inspiratory stridor. Most likely diagnosis?",
     ["Croup", "Epiglottitis", "Asthma", "Bronchiolitis"], "A"),
    ("Which drug reverses heparin?", ["Vitamin K", "Protamine sulfate", "Naloxone", "Flumazenil"], "B"),
    ("Which electrolyte abnormality causes peaked T waves?", ["Hyponatremia", "Hypocalcemia", "Hyperkalemia",
                                                              "Hypomagnesemia"], "C"),
    ("Which nerve is injured in wrist drop?", ["Median", "Ulnar", "Axillary", "Radial"], "D"),
]
FLASHCARDS = [
    ("What are the symptoms of anemia?", "Fatigue, pallor, shortness of breath on exertion and dizziness."),
    ("What is the mechanism of metformin?", "It reduces hepatic gluconeogenesis and improves insulin sensitivity."),
    ("What does a positive Babinski sign indicate?", "An upper motor neuron lesion in adults."),
    ("What causes type 1 diabetes?", "Autoimmune destruction of pancreatic beta cells."),
]


def make_rows(copies: int = 2) -> list[dict]:
    rows = []
    for k in range(copies):
        for i, (question, options, answer) in enumerate(MC_ITEMS):
            # Rotate the options so the letter, not the position, has to be learned from the text.
            shift = k % len(options)
            rotated = options[shift:] + options[:shift]
            letters = "ABCD"
            gold = letters[rotated.index(options["ABCD".index(answer)])]
            rows.append({"id": f"medqa-{i}-{k}", "source": "medqa",
                         "prompt": render_mc(question, dict(zip(letters, rotated))),
                         "completion": mc_letter_completion(gold)})
        for i, (q, a) in enumerate(FLASHCARDS):
            rows.append({"id": f"flash-{i}-{k}", "source": "medical_meadow",
                         "prompt": apply_template("medalpaca", "Answer this question truthfully", q),
                         "completion": a})
    return rows


def write_data(path: Path, train: list[dict], val: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("val", val)):
        (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def medical_rows():
    """`medical_rows(copies)`: rows in the data stage's format (a fixture: test modules cannot import conftest)."""
    return make_rows


@pytest.fixture(scope="session")
def medical_data(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("train-data"), make_rows(copies=4), make_rows(copies=1))


def make_train_config(model: Path, data: Path, out: Path, **overrides):
    from sm70.config import load_config
    from sm70.train.sft import TrainConfig

    settings = dict(model=str(model), data=str(data), out=str(out), micro_batch=2, max_length=256, lr=1e-3,
                    max_steps=12, eval_steps=6, logging_steps=2, save_steps=4, keep_checkpoints=2)
    settings.update(overrides)
    return load_config(TrainConfig, **settings)


@pytest.fixture(scope="session")
def train_config():
    """`train_config(model, data, out, **overrides)`: a small TrainConfig for tests."""
    return make_train_config


@pytest.fixture(scope="session")
def trained_run(tiny_model, medical_data, tmp_path_factory) -> Path:
    """One short real QLoRA run (4-bit base on the CPU), shared by the output, plan and merge tests."""
    from sm70.train.sft import train

    return train(make_train_config(tiny_model, medical_data, tmp_path_factory.mktemp("run") / "out"))
