"""The export card: evidence that each GGUF is the model that was trained, checked against the HF
model (merged, unquantized, fp32) on the same inputs.

- chat template: the one inside the GGUF (what llama.cpp applies) is the training template;
- tokenization: llama.cpp reads identical token ids from training and benchmark prompts rendered
  through that template with its special tokens;
- logits on held-out validation rows: mean KL(HF || GGUF) per token, top-1 agreement, perplexity;
- tasks: MedQA and PubMedQA accuracy of the GGUF scored through llama.cpp beside the HF model's, with
  the exact McNemar test on the same items.

`sm70 export verify DIR` runs it again on an export folder; a flagged file makes the exit status 1.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from pydantic import Field

from sm70.errors import Sm70Error
from sm70.export.gguf import ExportConfig, VerifySettings, first_difference, training_data, training_tokenizer
from sm70.jsonl import read_jsonl


class VerifyConfig(VerifySettings):
    folder: Path = Field(description="an export folder written by `sm70 export gguf`")


def verify(cfg: VerifyConfig) -> int:
    record = _record(cfg.folder)
    settings = ExportConfig(**{**record["settings"], **cfg.model_dump(mode="json", exclude_unset=True, exclude={"folder"}), "out": cfg.folder})
    return verify_folder(cfg.folder, settings)


def _record(folder: Path) -> dict:
    path = folder / "export.json"
    if not path.is_file():
        raise Sm70Error(f"{folder}: no export.json (not a folder written by `sm70 export gguf`)")
    return json.loads(path.read_text())


def verify_folder(folder: Path, cfg: ExportConfig) -> int:
    from sm70.export.card import write_card

    record = _record(folder)
    reference = Reference(cfg)
    data = cfg.data or training_data(cfg.adapter)
    prompts = training_prompts(data, cfg.prompts // 2, cfg.seed) + benchmark_prompts(cfg, reference.tokenizer,
                                                                                     cfg.prompts - cfg.prompts // 2)
    texts, text_source = heldout_texts(data, cfg)
    hf_runs = reference.task_runs(folder / "verify" / "hf")
    files = []
    for name in record["files"]:
        print(f"verify: {name}")
        files.append(check_file(folder, name, cfg, reference, prompts, texts, hf_runs))
    card = {"model": cfg.model, "adapter": str(cfg.adapter) if cfg.adapter else None,
            "reference": "the HF model, merged and unquantized, float32, through transformers",
            "metadata": record["metadata"], "settings": {k: v for k, v in cfg.dump().items()
                                                         if k in VerifySettings.model_fields},
            "texts_from": text_source, "prompts_checked": len(prompts), "hf": hf_runs["summary"], "files": files}
    write_card(folder, card)
    return 1 if any(f["verdict"] != "pass" for f in files) else 0


class Reference:
    """The HF side: tokenizer and training template, the fp32 model, its task results (once)."""

    def __init__(self, cfg: ExportConfig):
        self.cfg = cfg
        self.tokenizer = training_tokenizer(cfg)
        self.template = self.tokenizer.chat_template
        self._model = None

    def model(self):
        if self._model is None:
            from sm70.model.load import load_model

            self._model = load_model(self.cfg.model, adapter=self.cfg.adapter, quant="none", dtype="float32",
                                     device_map={"": "cpu"})  # compared with llama.cpp on the CPU
            self._model.eval()
        return self._model

    def task_runs(self, out: Path) -> dict:
        from sm70.eval.run import EvalConfig, evaluate

        evaluate(EvalConfig(out=out, model=self.cfg.model, adapter=str(self.cfg.adapter) if self.cfg.adapter else None,
                            dtype="float32", tasks=task_specs(self.cfg), seed=self.cfg.seed, batch_size=4))
        return {"out": out, "summary": _summary(out)}


def task_specs(cfg: ExportConfig) -> list[dict]:
    return [{"task": "medqa", "data": cfg.medqa, "sample": cfg.task_items},
            {"task": "pubmedqa", "data": cfg.pubmedqa, "sample": cfg.task_items}]


def _summary(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    return {name: {"n": t["n"], "acc": t["metrics"]["acc"]["value"]} for name, t in results["tasks"].items()}


def training_prompts(data: Path | None, n: int, seed: int) -> list[str]:
    if data is None or not (data / "train.jsonl").is_file():
        return []
    rows = [row for _, row in read_jsonl(data / "train.jsonl")]
    return [r["prompt"] + r["completion"] for r in random.Random(seed).sample(rows, min(n, len(rows)))]


def benchmark_prompts(cfg: ExportConfig, tokenizer, n: int) -> list[str]:
    from sm70.eval.engine import Setting, build_context
    from sm70.eval.tasks import get_task, load_task

    template = "chat" if tokenizer.chat_template else "none"
    prompts = []
    for name, data in (("medqa", cfg.medqa), ("pubmedqa", cfg.pubmedqa)):
        task = get_task(name)
        items = [i for i in load_task(name, data) if i.excluded is None][: max(1, n // 2)]
        prompts += [build_context(task, item, [], Setting(template=template), tokenizer) for item in items]
    return prompts


def heldout_texts(data: Path | None, cfg: ExportConfig) -> tuple[list[str], str]:
    if data is not None and (data / "val.jsonl").is_file():
        rows = [row for _, row in read_jsonl(data / "val.jsonl")]
        picked = random.Random(cfg.seed).sample(rows, min(cfg.texts, len(rows)))
        return [r["prompt"] + r["completion"] for r in picked], f"{data / 'val.jsonl'} (validation rows)"
    from sm70.eval.tasks import load_task

    items = load_task("medqa", cfg.medqa)[: cfg.texts]
    return [i.question for i in items], "MedQA questions (no training data given: data=)"


def check_file(folder: Path, name: str, cfg: ExportConfig, reference: Reference, prompts: list[str],
               texts: list[str], hf_runs: dict) -> dict:
    from sm70.eval.llamacpp import GgufModel

    path = folder / name
    gguf = GgufModel(str(path), threads=cfg.threads, kv_cache=cfg.kv_cache)
    try:
        template = check_template(path, reference.template)
        tokens = check_tokens(reference.tokenizer, gguf, prompts)
        logits = logit_fidelity(reference, gguf, texts, cfg.max_tokens)
    finally:
        gguf.close()
    tasks = task_fidelity(folder, name, cfg, hf_runs["out"])
    reasons = []
    if not template["identical"]:
        reasons.append("the chat template inside the file is not the training template")
    if tokens["mismatches"]:
        reasons.append(f"token ids differ on {tokens['mismatches']} of {tokens['n']} prompts")
    if logits["top1"] < cfg.min_top1:
        reasons.append(f"top-1 agreement {logits['top1']:.3f} < min_top1 {cfg.min_top1}")
    for task, t in tasks.items():
        if t["acc_hf"] - t["acc_gguf"] > cfg.max_acc_drop and t["p_value"] < cfg.alpha:
            reasons.append(f"{task} accuracy {t['acc_gguf']:.3f} vs {t['acc_hf']:.3f} (McNemar p={t['p_value']:.3g})")
    return {"file": name, "quant": name.removeprefix("model-").removesuffix(".gguf"), "bytes": path.stat().st_size,
            "tensor_types": tensor_types(path), "template": template, "tokenization": tokens, "logits": logits, "tasks": tasks,
            "verdict": "flagged" if reasons else "pass", "reasons": reasons}


def check_template(path: Path, training: str | None) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    inside = field.contents() if field is not None else None
    identical = inside == training
    return {"identical": identical,
            "difference": None if identical else first_difference(training or "", inside or "")}


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type the file holds: llama.cpp falls back to another type for tensors
    whose rows do not fit the asked one's blocks (K-quants need multiples of 256), and this shows it."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def check_tokens(tokenizer, gguf, prompts: list[str]) -> dict:
    mismatches, first = 0, None
    for i, text in enumerate(prompts):
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        ours = gguf.tokenize(text, special=False)
        if hf != ours:
            mismatches += 1
            if first is None:
                at = next((k for k, (a, b) in enumerate(zip(hf, ours)) if a != b), min(len(hf), len(ours)))
                first = {"prompt": i, "position": at, "text": text[:200], "hf": hf[max(0, at - 2):at + 3],
                         "gguf": ours[max(0, at - 2):at + 3]}
    return {"n": len(prompts), "mismatches": mismatches, "first_mismatch": first}


def logit_fidelity(reference: Reference, gguf, texts: list[str], max_tokens: int) -> dict:
    import torch

    model, tok = reference.model(), reference.tokenizer
    kls, agree, nll_hf, nll_gguf, n = [], 0, 0.0, 0.0, 0
    for text in texts:
        ids = tok(text)["input_ids"][:max_tokens]
        if len(ids) < 2:
            continue
        with torch.inference_mode():
            hf = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1).numpy()
        raw = gguf.logits_for(ids).astype(np.float64)
        ours = raw - np.logaddexp.reduce(raw, axis=-1, keepdims=True)
        kls += list((np.exp(hf) * (hf - ours)).sum(-1))
        agree += int((hf.argmax(-1) == ours.argmax(-1)).sum())
        nxt = np.array(ids[1:])
        nll_hf -= hf[np.arange(len(ids) - 1), nxt].sum()
        nll_gguf -= ours[np.arange(len(ids) - 1), nxt].sum()
        n += len(ids) - 1
    if not kls:
        raise Sm70Error("export card: no held-out text of 2 tokens or more to compare logits on")
    return {"tokens": len(kls), "kl_mean": float(np.mean(kls)), "kl_max": float(np.max(kls)),
            "top1": agree / len(kls), "ppl_hf": float(np.exp(nll_hf / n)), "ppl_gguf": float(np.exp(nll_gguf / n))}


def task_fidelity(folder: Path, name: str, cfg: ExportConfig, hf_out: Path) -> dict:
    from sm70.eval.run import EvalConfig, evaluate
    from sm70.eval.stats import mcnemar_exact

    out = folder / "verify" / name.removesuffix(".gguf")
    evaluate(EvalConfig(out=out, model=str(folder / name), backend="llama.cpp", kv_cache=cfg.kv_cache,
                        threads=cfg.threads, tasks=task_specs(cfg), seed=cfg.seed))
    hf, ours = _predictions(hf_out), _predictions(out)
    tasks = {}
    for task in sorted({k[0] for k in hf}):
        keys = [k for k in hf if k[0] == task and k in ours]
        a, b = [hf[k]["correct"] for k in keys], [ours[k]["correct"] for k in keys]
        test = mcnemar_exact(a, b)
        same = sum(hf[k]["prediction"] == ours[k]["prediction"] for k in keys)
        tasks[task] = {"n": len(keys), "acc_hf": float(np.mean(a)), "acc_gguf": float(np.mean(b)),
                       "same_answer": same / len(keys), "hf_only": test["b"], "gguf_only": test["c"],
                       "p_value": test["p_value"]}
    return tasks


def _predictions(run: Path) -> dict[tuple[str, str], dict]:
    return {(row["task"], row["id"]): row for _, row in read_jsonl(run / "predictions.jsonl")}


