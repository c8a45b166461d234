"""`sm70 train RECIPE plan=true`: predicted peak accelerator memory, before anything heavy loads.

A pure function of the recipe and the model's config.json (or a table of known shapes for hub ids
that are not on disk). Every term is an estimate with its assumption written next to it; the totals
are checked against published figures in tests/train/test_plan.py (65B QLoRA within 48 GB on one
GPU, QLoRA paper; 70B QLoRA about 48 GB, LLaMA-Factory; 70B FSDP+QLoRA 35.6 GB per GPU without CPU
offload, PEFT's FSDP+QLoRA guide, which is the whole 4-bit base that every process loads first).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sm70.errors import Sm70Error

GiB = 2**30
NF4_BITS = 4.127  # 4-bit NF4 + double-quantized absmax: 4 + 8/64/... = 4.127 bits/param (QLoRA paper, 3.1)
CUDA_CONTEXT_GiB = 0.75  # CUDA context, cuBLAS workspace and allocator slack
CPU_RUNTIME_GiB = 0.5  # Python + torch + tokenizer resident on the CPU

# Shapes of hub models people plan for before downloading them (from their config.json files).
KNOWN_SHAPES = {
    "meta-llama/llama-2-7b-hf": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "meta-llama/llama-2-13b-hf": dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                                      num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40),
    "meta-llama/llama-2-70b-hf": dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                                      num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
    "huggyllama/llama-65b": dict(vocab_size=32000, hidden_size=8192, intermediate_size=22016,
                                 num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=64),
}
# Before the data exists: Medical Meadow rows average roughly 600 characters once rendered with the
# Alpaca template (median ~350 characters of content plus ~230 of template), and the data stage holds
# out 5 % for validation (data's val_fraction).
CHARS_PER_ROW = 600
VAL_SHARE_GUESS = 0.05
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    rows: list[tuple[str, float]]  # (what, GiB per process), summed into total_gb
    total_gb: float
    device: str
    device_gb: float | None
    processes: int
    sharding: str
    activations_gb: dict[str, float]  # {"with checkpointing": .., "without checkpointing": ..}
    estimated_hours: float | None = None
    notes: list[str] = field(default_factory=list)
    load_gb: float | None = None  # a peak while loading, before training starts (FSDP + 4-bit)

    @property
    def peak_gb(self) -> float:
        return max(self.total_gb, self.load_gb or 0.0)

    @property
    def fits(self) -> bool | None:
        return None if self.device_gb is None else self.peak_gb <= self.device_gb

    def table(self) -> str:
        per = f" per process ({self.processes} processes, {self.sharding})" if self.processes > 1 else ""
        lines = [f"memory plan for {self.model}{per}:"]
        lines += [f"  {name:<46} {gb:8.2f} GiB" for name, gb in self.rows]
        lines.append(f"  {'predicted peak while training':<46} {self.total_gb:8.2f} GiB")
        if self.load_gb is not None:
            lines.append(f"  {'predicted peak while loading (whole 4-bit base)':<46} {self.load_gb:8.2f} GiB")
        for name, gb in self.activations_gb.items():
            lines.append(f"  (activations {name}: {gb:.2f} GiB)")
        if self.device_gb is None:
            lines.append(f"  device: {self.device}, memory unknown: state device_memory_gb= to check the fit")
        else:
            verdict = "FITS" if self.fits else "DOES NOT FIT"
            lines.append(f"  device: {self.device} with {self.device_gb:.1f} GiB -> {verdict}"
                         f" ({self.device_gb - self.peak_gb:+.2f} GiB headroom)")
        if self.estimated_hours is not None:
            lines.append(f"  estimated time (an estimate, not a measurement): {self.estimated_hours:.1f} h")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def model_shape(name: str) -> dict:
    config = Path(name) / "config.json"
    if config.is_file():
        return json.loads(config.read_text())
    for known, shape in KNOWN_SHAPES.items():
        if name.lower().rstrip("/").endswith(known.split("/")[1]):
            return shape
    raise Sm70Error(f"model {name!r}: no config.json there and not a known shape "
                    f"({', '.join(KNOWN_SHAPES)}); pass a local model directory")


def linear_shapes(shape: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer in one decoder block of a Llama-style model."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    head_dim = shape.get("head_dim") or h // shape["num_attention_heads"]
    kv = shape.get("num_key_value_heads") or shape["num_attention_heads"]
    return {"q_proj": (h, shape["num_attention_heads"] * head_dim), "k_proj": (h, kv * head_dim),
            "v_proj": (h, kv * head_dim), "o_proj": (shape["num_attention_heads"] * head_dim, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def detect_device() -> tuple[str, float | None]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, props.total_memory / GiB
    return "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB


def plan_memory(cfg, device_memory_gb: float | None = None, train_chars: float | None = None) -> MemoryPlan:
    """Predicted peak memory per process for `cfg` (a TrainConfig); reads only config.json.
    `train_chars` sizes the time estimate before the data exists (the pipeline's plan passes it)."""
    shape = model_shape(cfg.model)
    stated = device_memory_gb if device_memory_gb is not None else cfg.device_memory_gb
    if stated is not None:
        device, device_gb, gpu = "stated accelerator", float(stated), True
    else:
        device, device_gb = detect_device()
        gpu = device != "cpu"
    compute = 4 if (cfg.compute_dtype in ("float32", "fp32") or (cfg.compute_dtype == "auto" and not gpu)) else 2
    layers, h, vocab = shape["num_hidden_layers"], shape["hidden_size"], shape["vocab_size"]
    linears = linear_shapes(shape)
    targets = LINEARS if cfg.target_modules == "all-linear" else [m for m in LINEARS if m in cfg.target_modules]
    fsdp = cfg.sharding == "fsdp" and cfg.processes > 1
    shard = cfg.processes if fsdp else 1
    notes = []

    linear_params = layers * sum(a * b for a, b in linears.values())
    weight_bits = NF4_BITS if cfg.quant == "nf4" else compute * 8
    weights = linear_params * weight_bits / 8
    other_params = vocab * h * (1 if shape.get("tie_word_embeddings") else 2) + (2 * layers + 1) * h
    # prepare_model_for_kbit_training upcasts every unquantized parameter to fp32; under FSDP the
    # storage dtype must match the compute dtype, so they stay in it.
    other = other_params * (compute if fsdp or cfg.quant != "nf4" else 4)
    lora_params = layers * cfg.lora_r * sum(sum(linears[m]) for m in targets)
    optim = cfg.optim if cfg.optim != "auto" else ("paged_adamw_8bit" if gpu else "adamw_torch")
    state_bytes = 2 if "8bit" in optim else 8  # two Adam moments, 8-bit or fp32
    rows = [
        (f"base linear weights ({'NF4+DQ 4.127 bit' if cfg.quant == 'nf4' else 'unquantized'})", weights / shard),
        ("embeddings, lm_head, norms (unquantized)", other / shard),
        (f"LoRA r={cfg.lora_r} parameters ({lora_params / 1e6:.1f}M, fp32)", 4 * lora_params / shard),
        ("LoRA gradients (fp32)", 4 * lora_params / shard),
        (f"optimizer state ({optim})", state_bytes * lora_params / shard),
    ]
    load = None
    if fsdp:  # each process gathers a whole layer, and prefetches the next one
        layer_bytes = (weights + 4 * lora_params) / layers
        rows.append(("FSDP all-gather buffers (2 layers)", 2 * layer_bytes))
        notes.append("FSDP shards weights, LoRA parameters, gradients and optimizer state over the processes")
        if cfg.quant == "nf4":
            load = (weights + other_params * compute) / GiB + (CUDA_CONTEXT_GiB if gpu else CPU_RUNTIME_GiB)
            notes.append(
                "transformers 5.25 loads a 4-bit model whole on every process before FSDP shards it (its "
                "rank-0-only loading skips quantized models), so the peak per process is the whole 4-bit base. "
                "Published for Llama-2-70B FSDP+QLoRA on 2 GPUs (PEFT's FSDP+QLoRA guide): 35.6 GB per GPU without "
                "CPU offload, 19.6 GB with it (Answer.AI's 70B on 2 x 24 GB also offloads to the CPU); sm70 does "
                "not offload")
    acts = activations(shape, cfg.micro_batch * cfg.max_length, compute)
    chosen = "with checkpointing" if cfg.gradient_checkpointing else "without checkpointing"
    rows.append((f"activations {chosen} ({cfg.micro_batch}x{cfg.max_length} tokens)", acts[chosen]))
    rows.append(("CUDA context and allocator slack" if gpu else "runtime (Python, torch)",
                 CUDA_CONTEXT_GiB * GiB if gpu else CPU_RUNTIME_GiB * GiB))
    rows = [(name, b / GiB) for name, b in rows]
    acts = {k: v / GiB for k, v in acts.items()}
    hours = estimate_hours(cfg, linear_params + other_params, gpu, train_chars)
    if hours is not None:
        hours, eval_hours, passes, eval_rows = hours
        notes.append(f"the time estimate assumes {assumed_tflops(cfg, gpu):g} TFLOP/s sustained per process and "
                     "~4 characters per token (set assumed_tflops= for your hardware)")
        notes.append(f"of which validation: {eval_hours:.1f} h ({passes} passes over {eval_rows:,} rows; "
                     "max_eval_rows= and eval_steps= set it)")
    return MemoryPlan(model=str(cfg.model), rows=rows, total_gb=sum(gb for _, gb in rows), device=device,
                      device_gb=device_gb, processes=cfg.processes, sharding="fsdp" if fsdp else "replicated",
                      activations_gb=acts, estimated_hours=hours, notes=notes, load_gb=load)


def activations(shape: dict, tokens: int, compute: int) -> dict[str, float]:
    """Bytes of saved activations for `tokens` tokens in flight (micro-batch x sequence length).

    Per token and layer a Llama block keeps about 14 hidden-sized tensors (norm inputs, q/k/v/o
    inputs and their LoRA-dropout copies, attention output) and 5 intermediate-sized ones (gate, up,
    activation, product, down input); with checkpointing only the block input is kept, plus one
    block recomputed at a time. The logits are kept in the compute dtype, upcast to fp32 for the
    loss, and their gradient.
    """
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    block = tokens * compute * (14 * h + 5 * i)
    logits = tokens * shape["vocab_size"] * (compute + 4 + 4)
    return {"with checkpointing": layers * tokens * compute * h + block + logits,
            "without checkpointing": layers * block + logits}


def count_chars(path: Path) -> tuple[int, int]:
    """(characters, rows) of a prompt/completion jsonl file."""
    chars = rows = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                chars += len(row.get("prompt", "")) + len(row.get("completion", ""))
                rows += 1
    return chars, rows


def estimate_hours(cfg, params: int, gpu: bool, chars: float | None = None):
    """(total hours, validation hours, validation passes, validation rows), or None without a size.

    Training tokens x ~8 FLOPs per parameter and token (forward, backward through the frozen base,
    recomputation), validation tokens x 2 (forward only), over an assumed sustained throughput.
    Counts the data's characters when it exists; before that, validation rows are assumed as long as
    the average training row of CHARS_PER_ROW characters."""
    train, val = Path(cfg.data) / "train.jsonl", Path(cfg.data) / "val.jsonl"
    if train.is_file():
        chars, _ = count_chars(train)
    if chars is None:
        return None
    tokens = chars / 4 * cfg.epochs  # ~4 characters per token for English BPE
    per_step = cfg.micro_batch * cfg.grad_accum * cfg.max_length * cfg.processes  # packed rows are ~full
    if cfg.max_steps > 0:
        tokens = min(tokens, cfg.max_steps * per_step)
    steps = max(1, round(tokens / per_step))
    if val.is_file():
        val_chars, val_rows = count_chars(val)
        if cfg.max_eval_rows is not None and val_rows > cfg.max_eval_rows:
            val_chars, val_rows = val_chars * cfg.max_eval_rows / val_rows, cfg.max_eval_rows
    else:  # before the data stage: a guess at the held-out share, bounded by max_eval_rows
        val_rows = round(chars / CHARS_PER_ROW * VAL_SHARE_GUESS)
        val_rows = min(val_rows, cfg.max_eval_rows) if cfg.max_eval_rows else val_rows
        val_chars = val_rows * CHARS_PER_ROW
    passes = steps // cfg.eval_steps + 2 if val_rows else 0  # before training, every eval_steps, at the end
    eval_tokens = passes * val_chars / 4
    rate = assumed_tflops(cfg, gpu) * 1e12 * cfg.processes * 3600
    train_hours, eval_hours = tokens * 8 * params / rate, eval_tokens * 2 * params / rate
    return train_hours + eval_hours, eval_hours, passes, val_rows


def assumed_tflops(cfg, gpu: bool) -> float:
    return cfg.assumed_tflops or (90.0 if gpu else 0.2)  # ~30% of an A100's bf16 peak; a few CPU cores
