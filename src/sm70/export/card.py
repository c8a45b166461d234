"""The export card in three forms: export_card.json (everything), export_card.md (the table a device
maker reads to choose a file) and export_card.png (top-1 agreement and accuracy per file)."""

from __future__ import annotations

from pathlib import Path

from sm70.atomic import atomic_path, write_json, write_text

TASK_TITLES = {"medqa": "MedQA", "pubmedqa": "PubMedQA"}


def write_card(folder: Path, card: dict) -> None:
    write_json(folder / "export_card.json", card)
    write_text(folder / "export_card.md", card_md(card))
    plot_card(card, folder / "export_card.png")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def card_md(card: dict) -> str:
    tasks = sorted(card["hf"])
    head = ["file", "size (MiB)", "tensor types", "template", "token ids", "top-1 agree", "KL mean", "ppl (HF → GGUF)"]
    head += [f"{TASK_TITLES.get(t, t)} acc (HF → GGUF), p" for t in tasks] + ["verdict"]
    lines = [
        "# Export card",
        "",
        "Decision support for clinicians, not a certified medical device.",
        "",
        f"Model `{card['model']}`" + (f" + adapter `{card['adapter']}`" if card["adapter"] else "")
        + f". Reference: {card['reference']}. GGUF scored through llama.cpp with a "
        f"{card['settings']['kv_cache']} key/value cache. Logits on {card['texts_from']}; "
        f"{card['prompts_checked']} training and benchmark prompts tokenized by both.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for f in card["files"]:
        lg, tok = f["logits"], f["tokenization"]
        types = ", ".join(f"{k} ×{v}" for k, v in (f.get("tensor_types") or {}).items())
        cells = [f"`{f['file']}`", f"{f['bytes'] / 2**20:.1f}", types, "same" if f["template"]["identical"] else "DIFFERENT",
                 f"{tok['n'] - tok['mismatches']}/{tok['n']} identical", f"{100 * lg['top1']:.1f}%",
                 f"{lg['kl_mean']:.2e}", f"{lg['ppl_hf']:.2f} → {lg['ppl_gguf']:.2f}"]
        for t in tasks:
            r = f["tasks"].get(t)
            cells.append("—" if r is None else f"{_pct(r['acc_hf'])} → {_pct(r['acc_gguf'])} (n={r['n']}), "
                                               f"p={r['p_value']:.3g}")
        cells.append("pass" if f["verdict"] == "pass" else "**flagged**")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Thresholds: top-1 agreement ≥ {min_top1}; accuracy may not drop by more than {max_acc_drop} "
              "with McNemar p < {alpha}.".format(**card["settings"]), ""]
    for f in card["files"]:
        if f["reasons"]:
            lines.append(f"- `{f['file']}` flagged: " + "; ".join(f["reasons"]))
        if not f["template"]["identical"]:
            lines.append(f"  - chat template difference {f['template']['difference']}")
        if f["tokenization"]["first_mismatch"]:
            lines.append(f"  - first token mismatch: {f['tokenization']['first_mismatch']}")
    meta = card["metadata"]
    lines += ["", "Metadata written into every file: " + ", ".join(f"`{k}` = `{v}`" for k, v in meta.items()), ""]
    return "\n".join(lines)


def plot_card(card: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f["quant"] for f in card["files"]]
    tasks = sorted(card["hf"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.bar(names, [100 * f["logits"]["top1"] for f in card["files"]], color="#4c72b0")
    left.axhline(100 * card["settings"]["min_top1"], color="#c44e52", linestyle="--", label="threshold")
    left.set_ylabel("top-1 agreement with HF (%)")
    left.set_ylim(0, 100)
    left.legend(loc="lower right")
    width = 0.8 / (len(tasks) or 1)
    for k, task in enumerate(tasks):
        xs = [i + k * width for i in range(len(names))]
        right.bar(xs, [100 * (f["tasks"].get(task) or {}).get("acc_gguf", 0) for f in card["files"]], width,
                  label=f"{TASK_TITLES.get(task, task)} (GGUF)")
        right.axhline(100 * card["hf"][task]["acc"], color=f"C{k}", linestyle=":", label=f"{task} HF")
    right.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(names))], names)
    right.set_ylabel("accuracy (%)")
    right.legend(fontsize=7)
    fig.suptitle("sm70 export card: each GGUF against the HF model")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
