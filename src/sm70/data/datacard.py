"""The data card: what went in, what came out, what was removed and why, with hashes and licences.

`datacard.json` is for machines (the pipeline and the tests check that its counts add up),
`datacard.md` for the people who sign off on a training set, `lengths.png` shows the token-length
distribution against the recipe's cap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sm70.digest import sha256_file

REASONS = ("malformed", "excluded", "empty", "too_long", "duplicate", "near_duplicate")  # + contaminated:<task>


@dataclass
class SourceStats:
    name: str
    location: str
    format: str
    weight: float
    licence: str | None
    sha256: dict[str, str] = field(default_factory=dict)
    read: int = 0
    removed: Counter = field(default_factory=Counter)
    kept: int = 0
    mixed_out: int = 0     # kept rows the mix did not select (target_rows / weight below 1)
    repeated: int = 0      # extra copies the mix added (weight above 1)
    train: int = 0
    val: int = 0

    def card(self) -> dict:
        return {"name": self.name, "location": self.location, "format": self.format, "weight": self.weight,
                "licence": self.licence, "sha256": self.sha256, "read": self.read,
                "removed": dict(sorted(self.removed.items())), "kept": self.kept, "mixed_out": self.mixed_out,
                "repeated": self.repeated, "train": self.train, "val": self.val}


def sha256_tree(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {str(f): sha256_file(f) for f in files}


def check_counts(card: dict) -> None:
    """The invariants a data card promises; a failure here is a bug in the build, not in the data."""
    for s in card["sources"]:
        if s["read"] != s["kept"] + sum(s["removed"].values()):
            raise AssertionError(f"{s['name']}: read {s['read']} != kept {s['kept']} + removed {s['removed']}")
        if s["train"] + s["val"] != s["kept"] - s["mixed_out"] + s["repeated"]:
            raise AssertionError(f"{s['name']}: train + val != kept - mixed_out + repeated")
    t = card["totals"]
    if t["read"] != t["kept"] + sum(t["removed"].values()) or t["train"] + t["val"] != t["out"]:
        raise AssertionError(f"totals do not add up: {t}")


def totals(sources: list[SourceStats]) -> dict:
    removed: Counter = Counter()
    for s in sources:
        removed.update(s.removed)
    train, val = sum(s.train for s in sources), sum(s.val for s in sources)
    return {"read": sum(s.read for s in sources), "removed": dict(sorted(removed.items())),
            "kept": sum(s.kept for s in sources), "mixed_out": sum(s.mixed_out for s in sources),
            "repeated": sum(s.repeated for s in sources), "train": train, "val": val, "out": train + val}


def length_summary(lengths: np.ndarray, cap: int) -> dict:
    if not len(lengths):
        return {"rows": 0}
    edges = np.linspace(0, max(int(lengths.max()), 1), 21).round().astype(int)
    counts, _ = np.histogram(lengths, bins=np.unique(edges))
    return {"rows": int(len(lengths)), "min": int(lengths.min()), "median": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()), "cap": cap,
            "histogram": {"edges": np.unique(edges).tolist(), "counts": counts.tolist()}}


def plot_lengths(lengths: np.ndarray, cap: int, estimated: bool, path: Path) -> None:
    # A bare Figure draws with Agg without importing pyplot and its GUI backend machinery (~1 s).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.subplots()
    ax.hist(lengths, bins=50, color="#4472c4")
    if len(lengths) and cap <= lengths.max() * 1.5:
        ax.axvline(cap, color="#c00000", linestyle="--", label=f"max_tokens {cap}")
        ax.legend()
    ax.set_xlabel("tokens per row (prompt + completion)" + (", estimated" if estimated else ""))
    ax.set_ylabel("rows")
    ax.set_title("Token lengths of the training set")
    fig.tight_layout()
    fig.savefig(path)


def markdown(card: dict) -> str:
    t = card["totals"]
    lines = [f"# Data card: {card['out']}", "",
             f"sm70 {card['sm70_version']}, template `{card['template']}`, seed {card['seed']}. "
             f"{t['read']:,} rows read, {t['kept']:,} kept, {t['train']:,} train + {t['val']:,} validation.", "",
             "## Sources", "",
             "| source | format | licence | read | kept | removed | mixed out | repeated | train | val |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for s in card["sources"]:
        removed = ", ".join(f"{k} {v:,}" for k, v in s["removed"].items()) or "none"
        lines.append(f"| {s['name']} (`{s['location']}`) | {s['format']} | {s['licence'] or 'not stated'} | "
                     f"{s['read']:,} | {s['kept']:,} | {removed} | {s['mixed_out']:,} | {s['repeated']:,} | "
                     f"{s['train']:,} | {s['val']:,} |")
    lines += ["", "## Removed rows", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in t["removed"].items()] or ["| (none) | 0 |"]
    lines += ["", "Every removed row is in `rejects.jsonl` with its source, line and reason.", "",
              "## Decontamination", ""]
    if card["decontamination"]:
        lines += ["| benchmark | items | n-gram | indexed n-grams | files |", "|---|---:|---:|---:|---|"]
        lines += [f"| {b['task']} | {b['items']:,} | {b['n']} | {b['ngrams']:,} | "
                  f"{', '.join(f'`{f}`' for f in b['sha256']) or 'bundled sample'} |"
                  for b in card["decontamination"]]
    else:
        lines.append("None: this recipe names no benchmark to decontaminate against.")
    n = card["token_lengths"]
    if n.get("rows"):
        lines += ["", "## Token lengths", "",
                  f"min {n['min']}, median {n['median']:.0f}, 95th percentile {n['p95']:.0f}, max {n['max']} "
                  f"(cap {n['cap']}; {card['token_count']}).", "", "![token lengths](lengths.png)"]
    lines += ["", "## Files (sha256)", ""]
    lines += [f"- `{name}` {digest}" for name, digest in card["outputs"].items()]
    for s in card["sources"]:
        lines += [f"- input `{f}` {d}" for f, d in s["sha256"].items()]
    return "\n".join(lines) + "\n"
