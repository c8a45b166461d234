"""`sm70 train RECIPE [key=value ...]`: QLoRA supervised fine-tuning.

transformers' Trainer runs the loop (optimizer, schedule, accumulation, checkpoint/resume, DDP and
FSDP through accelerate); PEFT adds LoRA; bitsandbytes holds the frozen base in NF4 with double
quantization. What sm70 adds: completion-only labels, contamination-free packing, atomic
checkpoints, the memory plan, and a manifest that says what produced the adapter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sm70.atomic import atomic_dir, write_json, write_text
from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.train import attention as attention_impl


class TrainConfig(Config):
    model: str = Field(description="local Hugging Face model directory (or a hub id when SM70_ALLOW_HUB=1)")
    data: Path = Field(description="directory with train.jsonl and val.jsonl from `sm70 data build`")
    out: Path = Field(Path("runs/train"), description="run directory: adapter/, checkpoints/, metrics, manifest")
    seed: int = Field(0, description="seed for LoRA initialization, data order and dropout")
    quant: Literal["nf4", "none"] = Field("nf4", description="nf4: frozen base in 4-bit NF4 + double quant "
                                                             "(QLoRA); none: LoRA on the unquantized base")
    compute_dtype: str = Field("auto", description="auto (bf16 on a GPU with native bf16, fp16 on older GPUs, "
                                                   "fp32 on the CPU), float32, bfloat16, float16")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: float = Field(32, description="LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="modules that get LoRA: all-linear (every linear layer but the output "
                                  "layer, as QLoRA does) or a list of module names")
    max_length: int = Field(512, ge=8, description="tokens per row; longer examples are truncated, never dropped")
    packing: bool = Field(True, description="pack examples into rows; no example attends to another")
    completion_only: bool = Field(True, description="loss on the completion only, the prompt is context")
    loss_chunk: int = Field(1024, ge=0, description="compute the output layer and loss only at labelled "
                                                    "positions, this many at a time (0: the model's own loss "
                                                    "over every position)")
    micro_batch: int = Field(8, ge=1, description="rows per forward pass and process")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    epochs: float = Field(1.0, gt=0, description="passes over the training rows")
    max_steps: int = Field(-1, description="optimizer steps; > 0 overrides epochs")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the steps spent warming up")
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    max_grad_norm: float = Field(0.3, description="gradient clipping norm (QLoRA's 0.3)")
    optim: str = Field("auto", description="auto (paged_adamw_8bit on CUDA, adamw_torch on the CPU) or a "
                                           "transformers optimizer name")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    attn_implementation: str = Field("sdpa_varlen", description="sdpa_varlen (sdpa per packed example, no mask), "
                                                                "sdpa or eager (a block-diagonal mask per row), "
                                                                "flash_attention_2 (varlen on CUDA; with packing only at "
                                                                "micro_batch=1)")
    eval_steps: int = Field(50, ge=1, description="steps between validation-loss passes")
    max_eval_rows: int | None = Field(1000, ge=1, description="validate on at most N validation rows, spread "
                                                              "evenly through val.jsonl (null: all of them)")
    logging_steps: int = Field(10, ge=1, description="steps between lines in metrics.jsonl")
    save_steps: int = Field(100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="complete checkpoints kept for resume")
    resume: bool = Field(False, description="continue from the newest complete checkpoint in out/checkpoints")
    plan: bool = Field(False, description="print the memory and time plan and stop before loading anything "
                                          "(also --plan)")
    device_memory_gb: float | None = Field(None, description="for the plan: GiB per device (detected when unset)")
    processes: int = Field(1, ge=1, description="training processes: > 1 starts that many on this machine "
                                                "(one per GPU; gloo between CPU processes)")
    sharding: Literal["none", "fsdp"] = Field("none", description="with processes > 1: none = data parallel (each "
                                                                  "process holds the whole base), fsdp = FSDP2 "
                                                                  "(weights, gradients and optimizer state sharded)")
    assumed_tflops: float | None = Field(None, description="for the plan's time estimate (sustained, per process)")

    @model_validator(mode="after")
    def _flash_packing(self):
        # transformers' flash-attention splits a row at restarting position ids only when the batch holds
        # one row (modeling_flash_attention_utils._is_packed_sequence); with more, packed examples would
        # attend to each other.
        if self.attn_implementation.startswith("flash") and self.packing and self.micro_batch > 1:
            raise ValueError(f"attn_implementation={self.attn_implementation} with packing keeps examples apart "
                             f"only at micro_batch=1 (got {self.micro_batch}): use micro_batch=1 with grad_accum, "
                             "or attn_implementation=sdpa_varlen")
        return self


def train(cfg: TrainConfig) -> Path:
    if cfg.plan:
        from sm70.train.plan import plan_memory

        print(plan_memory(cfg).table())
        return Path(cfg.out)
    from sm70.train import distributed

    if cfg.processes > 1 and not distributed.launched():
        return distributed.launch(cfg)
    if os.environ.get(distributed.LAUNCHED_BY_SM70):
        distributed.die_with_parent()
    import torch
    from accelerate import PartialState

    from sm70.model.load import config_hash, resolve_model_path
    from sm70.train import checkpoints, manifest, progress

    processes = PartialState(cpu=not torch.cuda.is_available())  # joins the group under `accelerate launch`
    rank, world = processes.process_index, processes.num_processes
    out = Path(cfg.out)
    state = _check_out(cfg, out)
    resume_from = checkpoints.newest_checkpoint(out / "checkpoints") if cfg.resume else None
    processes.wait_for_everyone()  # every rank has looked at `out` before rank 0 writes to it
    if state == "complete":
        print(f"{out}: run already complete (manifest.json); nothing to do")
        return out
    started = manifest.now()
    if rank == 0:
        print(cfg.to_yaml(), end="")
        write_text(out / "config.yaml", cfg.to_yaml())
        write_json(out / "manifest.json", {"status": "running", "started": started, "config": cfg.dump()})
        if resume_from is not None:
            print(f"resuming from {resume_from}")
            progress.truncate_metrics(out / "metrics.jsonl", int(resume_from.name.split("-")[1]))
        else:
            (out / "metrics.jsonl").unlink(missing_ok=True)

    trainer, tokenizer = build_trainer(cfg, eval_on_start=resume_from is None, verbose=rank == 0)
    trainer.add_callback(progress.run_log_callback(out / "metrics.jsonl", trainer.data_collator, world))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    done = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
    # No second pass when the last step just evaluated; none at all without validation rows.
    final = done[-1] if done else (trainer.evaluate() if trainer.eval_dataset is not None else {})
    adapter_state = distributed.adapter_state_dict(trainer)  # every rank: a collective under FSDP
    peaks = distributed.peak_memory_per_process(progress.peak_memory_gb())
    if trainer.is_world_process_zero():
        with atomic_dir(out / "adapter") as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True, state_dict=adapter_state)
            tokenizer.save_pretrained(tmp)  # tokenizer + chat template: the adapter directory stands alone
        metrics = progress.read_metrics(out / "metrics.jsonl")
        progress.plot_loss(metrics, out / "loss.png")
        train_losses = [m["loss"] for m in metrics if m.get("loss") is not None]
        model_path = resolve_model_path(cfg.model)
        write_json(out / "manifest.json", {
            "status": "complete", "config": cfg.dump(), "started": started, "finished": manifest.now(),
            "resumed_from": str(resume_from) if resume_from else None,
            "model": {"path": model_path, "config_hash": config_hash(model_path)},
            "data": {f"{s}.jsonl": manifest.sha256(Path(cfg.data) / f"{s}.jsonl") for s in ("train", "val")},
            "versions": manifest.versions(), "git_commit": manifest.git_commit(),
            "processes": world, "steps": trainer.state.global_step,
            "distributed": {"strategy": distributed.strategy(cfg, world), "world_size": world,
                            "peak_memory_gb_per_process": peaks},
            "final": {"train_loss": train_losses[-1] if train_losses else None, "val_loss": final.get("eval_loss"),
                      "peak_memory_gb": max(peaks)},
            "outputs": {"adapter": "adapter", "checkpoints": "checkpoints", "metrics": "metrics.jsonl",
                        "loss_curve": "loss.png"},
        })
        val = final.get("eval_loss")
        print(f"adapter written to {out / 'adapter'}" + (f" (val loss {val:.4f})" if val is not None else ""))
    trainer.accelerator.wait_for_everyone()
    return out


def build_trainer(cfg: TrainConfig, eval_on_start: bool = True, verbose: bool = True):
    """The 4-bit LoRA model, the packed data and a Trainer with atomic checkpoints (bench uses it too).
    Returns (trainer, tokenizer); `trainer.data_collator.tokens` counts the real tokens trained on."""
    import torch
    import transformers
    from transformers import PrinterCallback, TrainingArguments

    from sm70.model.load import dtype_from_name, load_tokenizer
    from sm70.train import checkpoints, distributed, examples, packing

    cuda = torch.cuda.is_available()
    compute = dtype_from_name(cfg.compute_dtype)
    launcher_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"  # accelerate's config file
    fsdp = cfg.sharding == "fsdp" or launcher_fsdp
    # sm70's own FSDP: several processes and sharding=fsdp (an accelerate FSDP config brings its own plugin).
    shard = cfg.sharding == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not launcher_fsdp
    optim = distributed.optimizer(cfg, cuda, fsdp)
    tokenizer = load_tokenizer(cfg.model)
    rows = {split: examples.read_rows(Path(cfg.data) / f"{split}.jsonl", allow_empty=split == "val")
            for split in ("train", "val")}
    if cfg.max_eval_rows is not None:
        rows["val"] = examples.spread(rows["val"], cfg.max_eval_rows)
    validate = bool(rows["val"])
    if not validate:
        del rows["val"]
        if verbose:
            print("val.jsonl is empty: training without validation loss")
    data = {}
    for split, split_rows in rows.items():
        tokenized, cut = examples.tokenize(split_rows, tokenizer, cfg.max_length, cfg.completion_only)
        if cut and verbose:
            print(f"{split}: {cut} of {len(tokenized)} examples truncated to max_length={cfg.max_length}")
        laid_out = packing.pack(tokenized, cfg.max_length) if cfg.packing else packing.singles(tokenized)
        data[split] = [row.features() for row in laid_out]
    if verbose:
        print(f"train: {len(rows['train'])} examples in {len(data['train'])} rows; "
              f"val: {len(rows.get('val', []))} examples")

    transformers.set_seed(cfg.seed)  # LoRA initialization
    model = _lora_model(cfg, compute, fsdp, cuda)
    varlen = cfg.attn_implementation.startswith("flash") or cfg.attn_implementation == attention_impl.NAME
    attention = "position_ids" if varlen else "mask"
    width = cfg.max_length if cfg.packing else None
    collate = {split: packing.PackedCollator(tokenizer.pad_token_id, attention, width) for split in data}
    args = TrainingArguments(
        output_dir=str(Path(cfg.out) / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.micro_batch, per_device_eval_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, lr_scheduler_type="cosine" if cfg.schedule == "cosine" else "constant_with_warmup",
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        optim=optim, bf16=compute == torch.bfloat16, fp16=compute == torch.float16, use_cpu=not cuda,
        fsdp=shard, fsdp_config=distributed.fsdp_config(model, cfg.gradient_checkpointing) if shard else None,
        gradient_checkpointing=cfg.gradient_checkpointing and not shard,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        eval_strategy="steps" if validate else "no", eval_steps=cfg.eval_steps,
        eval_on_start=eval_on_start and validate,
        logging_strategy="steps", logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=None,  # pruned by the trainer class
        prediction_loss_only=True,
        report_to="none", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    trainer = checkpoints.atomic_trainer_class()(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data.get("val"),
        data_collator=collate["train"], processing_class=tokenizer,
    )
    distributed.promote_to_fsdp(trainer)
    trainer.keep_checkpoints = cfg.keep_checkpoints
    trainer.loss_chunk = cfg.loss_chunk
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace it
    if validate:
        _use_eval_collator(trainer, collate["val"])
    return trainer, tokenizer


def _check_out(cfg: TrainConfig, out: Path) -> str:
    """'fresh', 'resume' or 'complete'; refuses to silently overwrite an earlier run."""
    import json

    mf = out / "manifest.json"
    status = json.loads(mf.read_text()).get("status") if mf.is_file() else None
    if status == "complete" and cfg.resume:
        return "complete"
    if (status is not None or (out / "checkpoints").exists()) and not cfg.resume:
        raise Sm70Error(f"{out}: holds an earlier run; pass resume=true to continue it or choose another out=")
    return "resume" if cfg.resume else "fresh"


def _lora_model(cfg: TrainConfig, compute, fsdp: bool, cuda: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from sm70.model.bnb import keep_training_layout
    from sm70.model.load import load_model

    device_map = False if fsdp else None  # FSDP places the shards itself
    if fsdp and cuda and cfg.quant == "nf4":
        import torch

        from sm70.train.distributed import check_quantized_load
        from sm70.train.plan import GiB

        check_quantized_load(cfg, torch.cuda.get_device_properties(0).total_memory / GiB)
    if cuda and not fsdp:
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    # FSDP flattens quantized and unquantized parameters together: 4-bit storage in the compute dtype.
    model = load_model(cfg.model, quant=cfg.quant, dtype=cfg.compute_dtype, device_map=device_map,
                       storage_dtype=compute if fsdp else None)
    model.config.use_cache = False
    keep_training_layout(model)  # validation must not switch the 4-bit layers to a path without gradients
    attention_impl.register()
    model.set_attn_implementation(cfg.attn_implementation)
    if cfg.quant == "nf4" and not fsdp:
        # Upcasts the unquantized parameters to fp32 for stable LoRA training. Not under FSDP: there every
        # parameter must keep the one storage dtype that FSDP flattens.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _use_eval_collator(trainer, collator) -> None:
    """Evaluation gets its own collator so that its tokens do not count toward training tokens/s."""
    original = trainer.get_eval_dataloader

    def get_eval_dataloader(eval_dataset=None):
        train_collator, trainer.data_collator = trainer.data_collator, collator
        try:
            return original(eval_dataset)
        finally:
            trainer.data_collator = train_collator

    trainer.get_eval_dataloader = get_eval_dataloader
