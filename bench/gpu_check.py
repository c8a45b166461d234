"""One-call GPU acceptance check: `python bench/gpu_check.py [MODEL_DIR] [--out DIR]`.

What only a CUDA GPU shows, in about five minutes on one GPU:
  1. QLoRA on SmolLM2-135M-Instruct in bf16 with paged_adamw_8bit and the default attention: the loss
     falls, the adapter is saved; a second run is killed (SIGKILL) after a checkpoint and resumed.
  2. merge: the merged model's logits equal base + adapter's.
  3. the HF and vLLM evaluation backends pick the same answers on a few items (when vLLM is importable).
  4. the memory plan against the measured peak, on two decoder layers with Llama-2-70B's shapes
     (NF4 base, LoRA r=64, paged 8-bit AdamW, checkpointing): predicted / measured as a ratio.
One line per check, then a summary line. Without CUDA: one line and exit status 2.
MODEL_DIR defaults to .cache/models/smollm2-135m-instruct (`sm70 model fetch smollm2-135m-instruct`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
GiB = 2**30


class Checks:
    def __init__(self):
        self.results: list[tuple[str, str]] = []

    def line(self, name: str, status: str, detail: str) -> None:
        self.results.append((name, status))
        print(f"{status:<4} {name}: {detail}", flush=True)

    def run(self, name: str, fn, *args):
        t0 = time.time()
        try:
            status, detail = fn(*args)
        except Exception as e:  # a failed check is reported and the others still run
            status, detail = "FAIL", f"{type(e).__name__}: {str(e)[:400]}"
        self.line(name, status, f"{detail} ({time.time() - t0:.0f} s)")
        return status


@contextlib.contextmanager
def quiet():
    """The in-process steps' own progress output would bury the one line per check."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


def sm70(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sm70.cli", *args], cwd=ROOT, env=env or child_env(), **kwargs)


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


def build_data(model: Path, work: Path) -> Path:
    from sm70.config import load_config
    from sm70.data.build import build
    from sm70.data.config import DataConfig

    out = work / "data"
    with quiet():
        build(load_config(DataConfig, ROOT / "recipes/data/demo.yaml", [f"out={out}", f"tokenizer={model}"]))
    return out


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", f"model={model}", f"data={data}", f"out={out}", "quant=nf4", "compute_dtype=bfloat16",
            "optim=paged_adamw_8bit", "attn_implementation=sdpa_varlen", "micro_batch=4", "max_length=512",
            "lr=5e-4", "warmup_ratio=0", "logging_steps=1", "eval_steps=10", "save_steps=10", *extra]


def check_qlora(model: Path, data: Path, work: Path):
    out = work / "qlora"
    done = sm70(*train_args(model, data, out, "max_steps=30"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)
    log, _ = done.communicate(timeout=600)
    if done.returncode != 0:
        return "FAIL", f"sm70 train exited {done.returncode}: {log[-400:]}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    manifest = json.loads((out / "manifest.json").read_text())
    ok = vals[-1] < vals[0] and (out / "adapter" / "adapter_model.safetensors").is_file()
    return ("PASS" if ok else "FAIL"), (f"val loss {vals[0]:.3f} -> {vals[-1]:.3f} in 30 steps, adapter saved, "
                                        f"peak {manifest['final']['peak_memory_gb']:.2f} GiB")


def check_resume(model: Path, data: Path, work: Path):
    out = work / "resume"
    args = train_args(model, data, out, "max_steps=30")
    proc = sm70(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "checkpoint-10").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        return "FAIL", f"the run was not killed mid-way (exit {proc.returncode})"
    done = sm70(*args, "resume=true", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, _ = done.communicate(timeout=600)
    if done.returncode != 0:
        return "FAIL", f"resume exited {done.returncode}: {log[-400:]}"
    manifest = json.loads((out / "manifest.json").read_text())
    ok = manifest["status"] == "complete" and manifest["steps"] == 30 and manifest["resumed_from"]
    return ("PASS" if ok else "FAIL"), (f"killed after {Path(manifest['resumed_from']).name}, resumed to step "
                                        f"{manifest['steps']} (paged 8-bit optimizer state restored)")


def check_merge(model: Path, work: Path):
    import torch

    from sm70.config import load_config
    from sm70.model.load import load_model, load_tokenizer
    from sm70.train.merge import MergeConfig, merge

    adapter = work / "qlora" / "adapter"
    with quiet():
        merged = merge(load_config(MergeConfig, base=str(model), adapter=str(adapter), out=str(work / "merged"),
                                   dtype="float32"))
    tok = load_tokenizer(model)
    ids = torch.tensor([tok("What is the first-line treatment for anaphylaxis?")["input_ids"]])
    with torch.no_grad():
        a = load_model(model, adapter=adapter, dtype="float32").eval()(input_ids=ids.cuda()).logits.float().cpu()
        b = load_model(merged, dtype="float32").eval()(input_ids=ids.cuda()).logits.float().cpu()
    diff = (a - b).abs().max().item()
    return ("PASS" if diff < 1e-3 else "FAIL"), f"merged vs base + adapter (fp32): max |logit diff| {diff:.1e}"


def check_backends(work: Path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "SKIP", "vLLM is not importable here"
    runs = {}
    for backend in ("hf", "vllm"):
        out = work / f"eval-{backend}"
        done = sm70("eval", str(ROOT / "recipes/eval/demo.yaml"), f"model={work / 'merged'}", f"out={out}",
                    f"backend={backend}", "dtype=float32", "limit=8", stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)
        log, _ = done.communicate(timeout=600)
        if done.returncode != 0:
            return "FAIL", f"eval backend={backend} exited {done.returncode}: {log[-400:]}"
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        runs[backend] = {(r["task"], r["id"]): r for r in rows}
    same = sum(runs["hf"][k]["prediction"] == runs["vllm"].get(k, {}).get("prediction") for k in runs["hf"])
    worst = max((abs(x - y) for k in runs["hf"] for x, y in zip(runs["hf"][k].get("logliks") or [],
                                                                runs["vllm"].get(k, {}).get("logliks") or [])),
                default=0.0)
    ok = same == len(runs["hf"])
    return ("PASS" if ok else "FAIL"), f"{same}/{len(runs['hf'])} predictions equal, max |loglik diff| {worst:.1e}"


def llama70b_layers(work: Path, layers: int = 2) -> Path:
    """Llama-2-70B's shapes with `layers` decoder layers, random bf16 weights, written as a model dir
    with the tiny model's tokenizer (1,024 entries: every id is inside 70B's 32,000-entry vocabulary)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sm70.config import load_config
    from sm70.model.tiny import TinyModelConfig, build_tiny_model
    from sm70.train.plan import KNOWN_SHAPES

    out = work / "llama70b-layers"
    shape = dict(KNOWN_SHAPES["meta-llama/llama-2-70b-hf"], num_hidden_layers=layers)
    config = LlamaConfig(**shape, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    tiny = build_tiny_model(load_config(TinyModelConfig, out=str(work / "tiny")))
    for f in Path(tiny).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    return out


def check_plan(work: Path, data: Path):
    from sm70.config import load_config
    from sm70.train.plan import plan_memory
    from sm70.train.sft import TrainConfig

    model = llama70b_layers(work)
    out = work / "plan-run"
    args = ["quant=nf4", "compute_dtype=bfloat16", "optim=paged_adamw_8bit", "lora_r=64", "lora_alpha=16",
            "micro_batch=1", "max_length=512", "gradient_checkpointing=true", "max_steps=3", "eval_steps=100",
            "save_steps=100", "max_eval_rows=1"]
    cfg = load_config(TrainConfig, None, args, model=str(model), data=str(data), out=str(out))
    predicted = plan_memory(cfg).total_gb
    done = sm70("train", f"model={model}", f"data={data}", f"out={out}", *args, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
    log, _ = done.communicate(timeout=600)
    if done.returncode != 0:
        return "FAIL", f"sm70 train exited {done.returncode}: {log[-400:]}"
    measured = json.loads((out / "manifest.json").read_text())["final"]["peak_memory_gb"]
    ratio = predicted / measured
    ok = 0.8 <= ratio <= 1.5  # the plan may overestimate (it adds allocator slack); never badly under
    return ("PASS" if ok else "FAIL"), (f"2 layers of Llama-2-70B (NF4, r=64, 1x512, checkpointing): predicted "
                                        f"{predicted:.2f} GiB, measured {measured:.2f} GiB (max allocated), "
                                        f"predicted/measured {ratio:.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    parser.add_argument("--out", default=None, help="work folder (a temporary one by default)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check")
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    model = Path(args.model)
    if not (model / "config.json").is_file():
        print(f"gpu_check: {model} is not a model directory (sm70 model fetch smollm2-135m-instruct out={model})")
        return 2
    work = Path(args.out or tempfile.mkdtemp(prefix="sm70-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    checks = Checks()
    print(f"gpu_check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, work folder {work}", flush=True)
    data = build_data(model, work)
    if checks.run("qlora-bf16-paged-adamw-8bit", check_qlora, model, data, work) == "PASS":
        checks.run("kill-9-and-resume", check_resume, model, data, work)
        if checks.run("merge", check_merge, model, work) == "PASS":
            checks.run("hf-vs-vllm", check_backends, work)
    checks.run("memory-plan-vs-measured", check_plan, work, data)
    counts = {s: sum(1 for _, st in checks.results if st == s) for s in ("PASS", "FAIL", "SKIP")}
    print(f"summary: gpu_check {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in "
          f"{time.time() - started:.0f} s on {torch.cuda.get_device_name(0)}")
    return 0 if counts["FAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
