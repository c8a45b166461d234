"""`sm70 compare RUN_A RUN_B`: is B better than A on the same items, and how sure is that?

Both runs' `predictions.jsonl` are paired by (task, id). Per task it reports each run's accuracy
on the paired items, the difference B - A with a paired-bootstrap 95% interval, and McNemar's
exact test on the items exactly one of the runs got right. Items present in only one run are
counted and reported, never silently dropped; a paired id whose gold answers differ means the
runs used different data, which is an error, not a finding.

Outputs go to `out` (default: `compare-<A>-vs-<B>` beside RUN_B): `compare.json`, `compare.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from sm70.atomic import write_json, write_text
from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.eval.stats import accuracy_summary, mcnemar_exact, paired_bootstrap
from sm70.eval.tasks.source import read_json
from sm70.jsonl import read_jsonl

ALPHA = 0.05  # a difference is called significant below this McNemar p-value


class CompareConfig(Config):
    run_a: Path
    run_b: Path
    out: Path | None = None  # default: <run_b's parent>/compare-<run_a name>-vs-<run_b name>
    metric: Literal["acc", "acc_norm"] = "acc"
    n_boot: int = Field(10000, ge=100)
    seed: int = 0


def default_out(cfg: CompareConfig) -> Path:
    return cfg.run_b.parent / f"compare-{cfg.run_a.name}-vs-{cfg.run_b.name}"


# -- reading runs -----------------------------------------------------------------------------

def read_predictions(run: Path, metric: str) -> dict[tuple[str, str], dict]:
    """(task, id) -> {"gold", "correct"} from `run/predictions.jsonl`; bad lines name file:line:field."""
    path = run / "predictions.jsonl"
    if not path.is_file():
        raise Sm70Error(f"{path}: not found; is {run} an `sm70 eval` output directory?")
    flag = "correct" if metric == "acc" else "correct_norm"
    items: dict[tuple[str, str], dict] = {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        for name in ("task", "id", "gold", flag):
            if name not in row:
                hint = " (acc_norm exists only for loglik runs; use metric=acc)" if name == "correct_norm" else ""
                raise Sm70Error(f"{where}: {name}: missing{hint}")
        if not isinstance(row[flag], bool):
            raise Sm70Error(f"{where}: {flag}: expected true or false, got {row[flag]!r}")
        key = (str(row["task"]), str(row["id"]))
        if key in items:
            raise Sm70Error(f"{where}: id: {key[1]!r} appears twice in task {key[0]!r} "
                            f"(first on line {items[key]['line']})")
        items[key] = {"gold": row["gold"], "correct": row[flag], "line": lineno}
    if not items:
        raise Sm70Error(f"{path}: no predictions")
    return items


def read_results(run: Path) -> dict:
    path = run / "results.json"
    if not path.is_file():
        raise Sm70Error(f"{path}: not found; is {run} an `sm70 eval` output directory?")
    results = read_json(path)
    if not isinstance(results, dict):
        raise Sm70Error(f"{path}: expected a JSON object")
    return results


def describe_run(run: Path, results: dict) -> dict:
    model = results.get("model") or {}
    return {"path": str(run), "model": model.get("path"), "fingerprint": model.get("fingerprint"),
            "adapter": model.get("adapter"), "quant": model.get("quant")}


def _setting(results: dict, task: str) -> str | None:
    t = (results.get("tasks") or {}).get(task)
    if not t:
        return None
    return f"{t.get('shots', '?')}-shot, {t.get('mode', '?')}, prompt {t.get('prompt', '?')}"


# -- comparing --------------------------------------------------------------------------------

def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def verdict(diff: float, p: float) -> str:
    if p >= ALPHA:
        return f"no significant difference ({format_p(p)})"
    better, worse = ("B", "A") if diff > 0 else ("A", "B")
    return f"{better} better than {worse} at {format_p(p)}"


def compare_task(a: dict, b: dict, pred_a: dict, pred_b: dict, n_boot: int, seed: int) -> dict:
    """Statistics for one task; `a`/`b` map ids to {gold, correct}."""
    paired = sorted(set(a) & set(b))
    result = {"n_paired": len(paired), "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a))}
    if not paired:
        result["verdict"] = "no items in common"
        return result
    for item in paired:
        if str(a[item]["gold"]) != str(b[item]["gold"]):
            raise Sm70Error(
                f"{pred_a}:{a[item]['line']} and {pred_b}:{b[item]['line']}: gold: item {item!r} has gold "
                f"{a[item]['gold']!r} in A but {b[item]['gold']!r} in B; the runs scored different data")
    ca = [a[i]["correct"] for i in paired]
    cb = [b[i]["correct"] for i in paired]
    boot = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
    test = mcnemar_exact(ca, cb)
    result.update(acc_a=accuracy_summary(ca), acc_b=accuracy_summary(cb), diff=boot["diff"],
                  diff_ci95=boot["ci95"], mcnemar=test, verdict=verdict(boot["diff"], test["p_value"]))
    return result


def compare_runs(cfg: CompareConfig) -> dict:
    """The whole comparison as a JSON-ready dict (what compare.json holds)."""
    preds_a = read_predictions(cfg.run_a, cfg.metric)
    preds_b = read_predictions(cfg.run_b, cfg.metric)
    res_a, res_b = read_results(cfg.run_a), read_results(cfg.run_b)
    tasks = sorted({t for t, _ in preds_a} | {t for t, _ in preds_b})
    per_task = {}
    for task in tasks:
        a = {i: v for (t, i), v in preds_a.items() if t == task}
        b = {i: v for (t, i), v in preds_b.items() if t == task}
        per_task[task] = compare_task(a, b, cfg.run_a / "predictions.jsonl", cfg.run_b / "predictions.jsonl",
                                      cfg.n_boot, cfg.seed)
        per_task[task].update(setting_a=_setting(res_a, task), setting_b=_setting(res_b, task))
    if not any(t["n_paired"] for t in per_task.values()):
        raise Sm70Error(f"{cfg.run_a} and {cfg.run_b} share no (task, id) items: nothing to compare "
                        f"(A has tasks {sorted({t for t, _ in preds_a})}, B has {sorted({t for t, _ in preds_b})})")
    return {"run_a": describe_run(cfg.run_a, res_a), "run_b": describe_run(cfg.run_b, res_b),
            "metric": cfg.metric, "n_boot": cfg.n_boot, "seed": cfg.seed, "alpha": ALPHA, "tasks": per_task}


# -- presenting -------------------------------------------------------------------------------

COLUMNS = ("Task", "Paired", "Only A", "Only B", "Acc A", "Acc B", "B - A (95% CI)", "McNemar b/c", "p", "Verdict")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cells(task: str, t: dict) -> tuple[str, ...]:
    if not t["n_paired"]:
        return (task, "0", str(t["only_a"]), str(t["only_b"]), "", "", "", "", "", t["verdict"])
    lo, hi = t["diff_ci95"]
    m = t["mcnemar"]
    return (task, str(t["n_paired"]), str(t["only_a"]), str(t["only_b"]), _pct(t["acc_a"]["acc"]),
            _pct(t["acc_b"]["acc"]), f"{100 * t['diff']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})",
            f"{m['b']}/{m['c']}", f"{m['p_value']:.3g}", t["verdict"])


def _md(cell: object) -> str:
    # A '|' or newline would break a table row; a '<' could open raw HTML where markdown is rendered.
    return str(cell).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def compare_table_md(comparison: dict) -> str:
    """The per-task comparison as a markdown table, for embedding in other reports."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_md(c) for c in _cells(task, t)) + " |" for task, t in comparison["tasks"].items()]
    return "\n".join(lines) + "\n"


def compare_md(comparison: dict) -> str:
    a, b = comparison["run_a"], comparison["run_b"]
    mismatched = [task for task, t in comparison["tasks"].items() if t.get("setting_a") != t.get("setting_b")]
    lines = [
        "# sm70 compare\n",
        *(_md(f"- {name}: {r['path']} (model {r['model']}, adapter {r['adapter']}, quant {r['quant']})")
          for name, r in (("A", a), ("B", b))),
        f"- metric: {comparison['metric']}; {comparison['n_boot']} paired bootstrap resamples, seed "
        f"{comparison['seed']}\n",
        compare_table_md(comparison),
        "How to read this: Acc A and Acc B are accuracies (%) on the items both runs scored. "
        "B - A is the difference with a 95% paired-bootstrap interval; an interval that excludes 0 "
        "means the difference is unlikely to be chance. McNemar b counts items A got right and B "
        "got wrong, c the reverse; p is the exact two-sided test on those discordant items, and a "
        f"verdict is given at p < {comparison['alpha']}, one task at a time, with no correction "
        "for testing several tasks. Only A / Only B count items scored by one run only; they are "
        "left out of the statistics.",
    ]
    if mismatched:
        lines.append(f"\nThe runs' settings differ for {', '.join(mismatched)}: " + "; ".join(
            f"{task}: A {comparison['tasks'][task].get('setting_a')}, B {comparison['tasks'][task].get('setting_b')}"
            for task in mismatched) + ".")
    lines.append("\nsm70 is decision support for clinicians, not a certified medical device.")
    return "\n".join(lines) + "\n"


def _print_table(comparison: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import (
        Text,  # plain text: a "[...]" in a path or id is not rich markup
    )

    table = Table(title=f"B - A on paired items ({comparison['metric']})")
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for task, t in comparison["tasks"].items():
        table.add_row(*(Text(c) for c in _cells(task, t)))
    console = Console()
    console.print(f"A = {comparison['run_a']['path']}\nB = {comparison['run_b']['path']}", markup=False,
                  highlight=False)
    console.print(table)
    console.print(f"wrote {out / 'compare.json'} and {out / 'compare.md'}", markup=False, highlight=False)


def compare(cfg: CompareConfig) -> Path:
    comparison = compare_runs(cfg)
    out = cfg.out or default_out(cfg)
    write_json(out / "compare.json", comparison)
    write_text(out / "compare.md", compare_md(comparison))
    _print_table(comparison, out)
    return out
