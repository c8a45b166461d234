"""Run the stages in order: model -> data -> train -> [index] -> eval (base, tuned) -> compare -> report."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from sm70.config import load_config, read_recipe
from sm70.errors import Sm70Error
from sm70.pipeline.config import DemoConfig, PipelineConfig, StageRef, find_recipe
from sm70.pipeline.stages import Stage, State, input_hash, reset

console = Console(stderr=True)

# Where each benchmark lives inside a folder laid out like ../shared/data.
REAL_DATA = {
    "medqa": "medqa_usmle/phrases_no_exclude_test.jsonl",
    "pubmedqa": "pubmedqa",
    "usmle": "usmle_self_assessment",
    "usmle_step1": "usmle_self_assessment",
    "usmle_step2": "usmle_self_assessment",
    "usmle_step3": "usmle_self_assessment",
}


def _sets(ref: StageRef) -> list[str]:
    return [f"{k}={_flow(v)}" for k, v in flatten(ref.set).items()]


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}, so that nested settings merge into a recipe instead of replacing it."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _recipe(ref: StageRef) -> Path | None:
    return find_recipe(ref.recipe) if ref.recipe else None


def eval_data_overrides(recipe: Path | None, data_dir: Path | None) -> list[str]:
    """Point every evaluation task at the real files in `data_dir` instead of the bundled samples."""
    if data_dir is None:
        return []
    data_dir = Path(data_dir).resolve()  # a missing file is reported by the evaluation stage itself
    tasks = (read_recipe(recipe) if recipe else {}).get("tasks", [])
    new = []
    for task in tasks:
        name = task["task"] if isinstance(task, dict) else str(task)
        if name not in REAL_DATA:
            raise Sm70Error(f"data_dir: no real data layout known for task {name!r}")
        entry = dict(task) if isinstance(task, dict) else {"task": name}
        entry["data"] = str(data_dir / REAL_DATA[name])
        new.append(entry)
    return [f"tasks={_flow(new)}"] if new else []


def _flow(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text.removesuffix("...").strip()  # YAML ends a bare scalar document with "..."


def build_stages(cfg: PipelineConfig) -> dict[str, Stage]:
    out = Path(cfg.out)
    stages: dict[str, Stage] = {}
    if cfg.model == "tiny":
        model_dir = out / "model"
        stages["model"] = Stage("model", ("model", "tiny"), model_dir,
                                overrides=[f"out={model_dir}", *(f"{k}={v}" for k, v in cfg.tiny.items())],
                                is_complete=lambda d: (d / "config.json").is_file())
        model_after: tuple[str, ...] = ("model",)
    else:
        model_dir, model_after = Path(cfg.model), ()
    model = str(model_dir)
    # A real model counts tokens (and renders `template: chat`) with its own tokenizer.
    tokenizer = [] if cfg.model == "tiny" else [f"tokenizer={model}"]
    stages["data"] = Stage("data", ("data", "build"), out / "data", _recipe(cfg.data),
                           [*_sets(cfg.data), *tokenizer, f"out={out / 'data'}"])
    stages["train"] = Stage("train", ("train",), out / "train", _recipe(cfg.train),
                            [*_sets(cfg.train), f"model={model}", f"data={out / 'data'}", f"out={out / 'train'}"],
                            after=("data", *model_after), resumable=True, own_process=True)
    if cfg.index is not None:
        stages["index"] = index_stage(cfg)
    for setting, ref in cfg.eval_settings().items():
        stages.update(eval_stages(cfg, setting, ref, model, model_after))
    return stages


def index_stage(cfg: PipelineConfig) -> Stage:
    """`sm70 index build` into OUT/index; with data_dir, the recipe's `docs` is that folder (the recipes
    name ../shared/data paths under it, as the evaluation recipes do)."""
    out = Path(cfg.out) / "index"
    docs = [f"docs={Path(cfg.data_dir).resolve()}"] if cfg.data_dir is not None else []
    return Stage("index", ("index", "build"), out, _recipe(cfg.index), [*_sets(cfg.index), *docs, f"out={out}"])


def _uses_rag(recipe: Path | None, ref: StageRef) -> bool:
    return bool((read_recipe(recipe) if recipe else {}).get("rag") or flatten(ref.set).get("rag"))


def stage_name(stage: str, setting: str) -> str:
    return f"{stage}.{setting}" if setting else stage


def stage_dir(out: Path, folder: str, setting: str) -> Path:
    return out / (f"{folder}-{setting}" if setting else folder)


def eval_stages(cfg: PipelineConfig, setting: str, ref: StageRef, model: str,
                model_after: tuple[str, ...]) -> dict[str, Stage]:
    """One evaluation setting: base and tuned model scored the same way, then compared item by item."""
    out = Path(cfg.out)
    recipe = _recipe(ref)
    common = [*_sets(ref), *eval_data_overrides(recipe, cfg.data_dir), f"model={model}"]
    if cfg.index is not None and _uses_rag(recipe, ref):
        # the pipeline's own index, so that changing its documents re-runs the evaluations that read it
        common.append(f"rag={out / 'index'}")
        model_after = (*model_after, "index")
    base, tuned = stage_dir(out, "eval-base", setting), stage_dir(out, "eval-tuned", setting)
    stages = {}
    if cfg.eval_base:
        stages[stage_name("eval_base", setting)] = Stage(
            stage_name("eval_base", setting), ("eval",), base, recipe, [*common, f"out={base}"], after=model_after,
            own_process=True)
    stages[stage_name("eval_tuned", setting)] = Stage(
        stage_name("eval_tuned", setting), ("eval",), tuned, recipe,
        [*common, f"adapter={out / 'train' / 'adapter'}", f"out={tuned}"], after=("train", *model_after),
        own_process=True)
    if cfg.eval_base:
        compare = stage_dir(out, "compare", setting)
        stages[stage_name("compare", setting)] = Stage(
            stage_name("compare", setting), ("compare",), compare, None,
            [f"run_a={base}", f"run_b={tuned}", f"out={compare}"],
            after=(stage_name("eval_base", setting), stage_name("eval_tuned", setting)),
            is_complete=lambda d: (d / "compare.json").is_file())
    return stages


def run_pipeline(cfg: PipelineConfig) -> int:
    out = Path(cfg.out)
    stages = build_stages(cfg)
    state = State(out / "pipeline-state.json")
    if cfg.plan:
        return print_plan(cfg, stages, state)
    out.mkdir(parents=True, exist_ok=True)
    ran: list[str] = []
    for name, stage in stages.items():
        config = stage.config()
        digest = input_hash(stage, config, stages, out)
        last = state.get(name)
        if stage.complete() and last.get("finished") == digest:
            console.print(f"[green]✓[/] {name}: up to date ({stage.out})")
            continue
        resume = stage.resumable and last.get("started") == digest and stage.out.exists()
        if resume:
            console.print(f"[yellow]↻[/] {name}: resuming the interrupted run in {stage.out}")
            config = stage.config(["resume=true"])
        else:
            console.print(f"[cyan]▶[/] {name}: running ({stage.out})")
            reset(stage.out)
        state.set(name, started=digest, finished=None)
        t0 = time.time()
        stage.execute(config)
        if not stage.complete():
            raise Sm70Error(f"stage {name} ended without complete outputs in {stage.out}")
        state.set(name, finished=digest, seconds=round(time.time() - t0, 1))
        ran.append(name)
    report = out / "report.md"
    if ran or not report.is_file():
        from sm70.pipeline.report import write_pipeline_report

        write_pipeline_report(cfg, stages, state)
    else:
        console.print("nothing to do: every stage is up to date")
    # Plain prints: these two lines are meant to be copied, so no wrapping or markup.
    print(f"\nreport: {out / 'report.html'}  (and {report})")
    print(f"serve the fine-tuned model: {serve_command(cfg, stages)}")
    print("  (the server asks for API keys: create one first with `sm70 keys add NAME keys=FILE`, FILE being the "
          "recipe's keys file, or add auth=none to serve loopback without keys)")
    return 0


def serve_command(cfg: PipelineConfig, stages: dict[str, Stage]) -> str:
    model = stages["model"].out if "model" in stages else cfg.model
    parts = ["sm70 serve"]
    if cfg.serve and cfg.serve.recipe:
        parts.append(str(cfg.serve.recipe))
    parts += [f"model={model}", f"adapter={stages['train'].out / 'adapter'}", *(_sets(cfg.serve) if cfg.serve else [])]
    return " ".join(parts)


def print_plan(cfg: PipelineConfig, stages: dict[str, Stage], state: State) -> int:
    from sm70.train.plan import plan_memory

    out = Path(cfg.out)
    print(f"pipeline plan for {out} (nothing is run)")
    dirty = False
    for name, stage in stages.items():
        try:
            config = stage.config()
            digest = input_hash(stage, config, stages, out)
        except Sm70Error as e:
            print(f"  {name:<20} cannot resolve its config: {e}")
            dirty = True
            continue
        last = state.get(name)
        if stage.complete() and last.get("finished") == digest and not dirty:
            what = "up to date, skip"
        elif stage.resumable and last.get("started") == digest and stage.out.exists():
            what, dirty = "resume the interrupted run", True
        else:
            what, dirty = "run", True
        print(f"  {name:<20} {what:<28} -> {stage.out}")
    train_cfg = stages["train"].config()
    plan = plan_memory(train_cfg, train_chars=expected_chars(stages["data"]))
    print("\ntraining memory plan:")
    print(plan.table())
    print(f"\nserve with: {serve_command(cfg, stages)}")
    return 0




def expected_chars(data_stage: Stage) -> float | None:
    """Characters the training set will hold: counted by the train plan when it exists, else guessed."""
    from sm70.train.plan import CHARS_PER_ROW

    if (data_stage.out / "train.jsonl").is_file():
        return None
    rows = getattr(data_stage.config(), "target_rows", None)
    if rows:
        print(f"  (time estimate: {rows:,} rows of ~{CHARS_PER_ROW} characters, before the data is built)")
    return rows * CHARS_PER_ROW if rows else None


def demo(cfg: DemoConfig) -> int:
    overrides = [f"out={cfg.out}", *(f"{k}={_flow(v)}" for k, v in flatten(cfg.set).items())]
    if cfg.data_dir is not None:
        overrides.append(f"data_dir={Path(cfg.data_dir).resolve()}")
    if cfg.plan:
        overrides.append("plan=true")
    pipeline = load_config(PipelineConfig, find_recipe(cfg.pipeline), overrides)
    console.print("sm70 demo: the tiny model and the bundled samples, data -> QLoRA -> evaluation -> report. "
                  "Decision support for clinicians, not a certified medical device.")
    return run_pipeline(pipeline)
