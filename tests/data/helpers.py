"""Small builders shared by the data tests: write a source file, make a DataConfig, read outputs."""

from __future__ import annotations

import json
from pathlib import Path

from sm70.config import load_config
from sm70.data.build import DataConfig


def alpaca(input: str, output: str, instruction: str = "Answer this question truthfully") -> dict:
    return {"instruction": instruction, "input": input, "output": output}


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows, indent=4), encoding="utf-8")
    return path


def config(tmp_path: Path, sources: list[dict], **overrides) -> DataConfig:
    data = {"out": str(tmp_path / "out"), "sources": sources, "val_fraction": 0.0, "workers": 1, **overrides}
    return load_config(DataConfig, None, [], **data)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rejects(out: Path) -> list[dict]:
    return read_jsonl(out / "rejects.jsonl")


# Distinct, realistic rows: none is a near-duplicate of another.
DISTINCT = [
    alpaca("What is the first-line treatment for anaphylaxis?",
           "Intramuscular epinephrine into the anterolateral thigh, repeated every 5 to 15 minutes if needed."),
    alpaca("Which enzyme do statins inhibit?", "HMG-CoA reductase, the rate-limiting enzyme of cholesterol synthesis."),
    alpaca("What are the symptoms of iron deficiency anemia?",
           "Fatigue, pallor, shortness of breath on exertion, brittle nails and a craving to eat ice."),
    alpaca("How is Lyme disease transmitted?", "Through the bite of an infected Ixodes tick carrying Borrelia burgdorferi."),
    alpaca("What does a positive Murphy sign suggest?",
           "Inspiratory arrest on palpation of the right upper quadrant suggests acute cholecystitis."),
    alpaca("What is the antidote for heparin?", "Protamine sulfate binds heparin and neutralises its anticoagulant effect."),
]
