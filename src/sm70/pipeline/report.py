"""The pipeline's report: what data went in, how training went, the results beside the published
comparators, and the paired comparison, in `report.md` and a self-contained `report.html`."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from sm70 import __version__
from sm70.atomic import write_text
from sm70.pipeline.config import PipelineConfig
from sm70.pipeline.stages import Stage, State

DISCLAIMER = ("sm70 is decision support for clinicians, not a certified medical device. Numbers on the bundled "
              "samples show that the chain works; they are not benchmark results.")


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def data_section(out: Path) -> list[str]:
    lines = ["## Training data", ""]
    md = out / "datacard.md"
    if not md.is_file():
        return lines + [f"(no data card in {out})", ""]
    for line in md.read_text().split("\n"):
        if line.startswith("# "):
            continue  # the card's own title; the section heading above replaces it
        if line.startswith("#"):
            line = "#" + line  # nest the card's sections under this one
        # The card links its files relative to its own folder; the report sits one folder up.
        line = re.sub(r"\]\(([^/)][^)]*)\)", lambda m: f"]({_rel(out / m.group(1))})", line)
        lines.append(line)
    return lines + [""]


def train_section(out: Path) -> list[str]:
    metrics = _jsonl(out / "metrics.jsonl")
    manifest = _json(out / "manifest.json") or {}
    lines = ["## Training (QLoRA)", ""]
    losses = [m for m in metrics if m.get("loss") is not None]
    vals = [m for m in metrics if m.get("val_loss") is not None]
    if losses:
        lines.append(f"- steps: {losses[-1].get('step')}; training loss {losses[0]['loss']:.4f} → {losses[-1]['loss']:.4f}")
    if vals:
        lines.append(f"- validation loss {vals[0]['val_loss']:.4f} → {vals[-1]['val_loss']:.4f}")
    tps = [m.get("tokens_per_s") for m in metrics if m.get("tokens_per_s")]
    if tps:
        lines.append(f"- throughput: {tps[-1]:.0f} tokens/s at the end")
    for key in ("started", "finished"):
        if manifest.get(key):
            lines.append(f"- {key}: {manifest[key]}")
    if (out / "loss.png").is_file():
        lines += ["", f"![loss curve]({_rel(out / 'loss.png')})"]
    return lines + [""]


def results_section(stages: dict[str, Stage], setting: str = "", title: str = "") -> list[str]:
    from sm70.eval.report import results_table_md
    from sm70.pipeline.run import stage_name

    lines = [f"## Results{': ' + title if title else ''}", ""]
    for name, heading in (("eval_base", "Base model"), ("eval_tuned", "Fine-tuned model (base + LoRA adapter)")):
        stage = stages.get(stage_name(name, setting))
        results = _json(stage.out / "results.json") if stage else None
        if results:
            lines += [f"### {heading}", "", results_table_md(results), ""]
    tuned = stages.get(stage_name("eval_tuned", setting))
    if tuned and (tuned.out / "results.png").is_file():
        lines += [f"![results beside the published comparators]({_rel(tuned.out / 'results.png')})", ""]
    return lines


def compare_section(stages: dict[str, Stage], setting: str = "", title: str = "") -> list[str]:
    from sm70.eval.compare import compare_table_md
    from sm70.pipeline.run import stage_name

    stage = stages.get(stage_name("compare", setting))
    comparison = _json(stage.out / "compare.json") if stage else None
    if not comparison:
        return []
    return [f"## Base vs fine-tuned (paired, same items){': ' + title if title else ''}", "",
            compare_table_md(comparison), ""]


def write_pipeline_report(cfg: PipelineConfig, stages: dict[str, Stage], state: State) -> Path:
    from sm70.pipeline.run import serve_command

    out = Path(cfg.out)
    lines = [f"# sm70 report: {out.name}", "", f"> {DISCLAIMER}", "",
             f"sm70 {__version__}; model `{cfg.model}`; pipeline stages and their run times:", ""]
    lines += [f"- {name}: {state.get(name).get('seconds', 'skipped')} s" for name in stages]
    lines += [""]
    # What a reviewer asks first (how good, and is the difference real) comes before how it was made.
    for setting in cfg.eval_settings():
        lines += results_section(stages, setting, setting)
        lines += compare_section(stages, setting, setting)
    lines += train_section(stages["train"].out)
    lines += data_section(stages["data"].out)
    lines += ["## Serve the fine-tuned model", "", f"    {serve_command(cfg, stages)}", ""]
    md = "\n".join(lines)
    write_text(out / "report.md", md.replace("](" + str(out.resolve()) + "/", "]("))
    write_text(out / "report.html", to_html(md, f"sm70 report: {out.name}"))
    return out / "report.md"


def _rel(path: Path) -> str:
    return str(path.resolve())


def to_html(md: str, title: str) -> str:
    """Markdown to one self-contained page: raw HTML in any text is escaped, images are inlined."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = renderer.render(md)
    body = _inline_images(body)
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#1d2330}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccd;padding:4px 8px;text-align:right}"
             "th{background:#eef}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "table{display:block;overflow-x:auto}code{word-break:break-all}"
             "blockquote{border-left:4px solid #c33;margin:0;padding:.5em 1em;background:#fff4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


def _inline_images(body: str) -> str:
    def repl(match):
        src = html.unescape(match.group(1))
        path = Path(src)
        if path.is_file() and path.suffix == ".png":
            data = base64.b64encode(path.read_bytes()).decode()
            return f'src="data:image/png;base64,{data}"'
        return match.group(0)

    return re.sub(r'src="([^"]+)"', repl, body)
