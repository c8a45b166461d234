"""Several training processes: `sm70 train processes=N [sharding=fsdp]`.

sm70 starts the N processes itself through torch's own launcher (`python -m torch.distributed.run`,
the code behind `torchrun`): nccl between GPUs, gloo between CPU processes. Each process runs the
same `sm70 train` with the resolved config. `sharding=none` is data parallel (DDP, each process holds
the whole 4-bit base); `sharding=fsdp` is FSDP2 (`fully_shard` on every decoder layer and the root)
through transformers' Trainer and accelerate, with sharded checkpoints (`pytorch_model_fsdp_0/`,
`optimizer_0/`) that resume=true continues from.

accelerate turns FSDP on only for accelerator devices (its MULTI_CPU type has no FSDP); torch's
FSDP2 itself runs on CPU processes over gloo, so on a CPU host the Trainer's accelerator is switched
to FSDP after it is built (`promote_to_fsdp`). That is what lets CI run the sharded path for real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from sm70.errors import Sm70Error

# Optimizers whose state FSDP's sharded checkpoint cannot save. PEFT's FSDP+QLoRA guide
# (docs/source/accelerate/fsdp.md, Caveats): "When using FSDP+QLoRA, paged_adamw_8bit currently results
# in an error when saving a checkpoint." The other bitsandbytes paged and 8-bit optimizers keep the same
# kind of state (paged buffers, quantized moments) and are refused with it, untested.
NOT_UNDER_FSDP = ("paged_adamw_8bit", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_32bit", "paged_adamw")
FSDP_OPTIM = "adamw_torch"


LAUNCHED_BY_SM70 = "SM70_TRAIN_WORKER"


def launched() -> bool:
    """True inside a process started by torch.distributed.run / accelerate launch."""
    return "LOCAL_RANK" in os.environ


def launch(cfg) -> Path:
    """Start `cfg.processes` training processes on this machine and wait for them."""
    with tempfile.TemporaryDirectory(prefix="sm70-train-") as tmp:
        recipe = Path(tmp) / "train.yaml"
        recipe.write_text(cfg.to_yaml())
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={cfg.processes}", "-m", "sm70.cli", "train", str(recipe)]
        print(f"starting {cfg.processes} training processes ({strategy(cfg, cfg.processes)}): "
              f"{' '.join(command[:6])} ...", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), LAUNCHED_BY_SM70: "1"}
        done = subprocess.run(command, env=env, preexec_fn=die_with_parent)
    if done.returncode != 0:
        raise Sm70Error(f"the {cfg.processes} training processes failed (exit status {done.returncode}); "
                        "their errors are above")
    return Path(cfg.out)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies. torch's launcher starts every worker in a
    session of its own, so a `kill -9` of `sm70 train` would otherwise leave the agent and the workers
    training (and writing) on; set in the agent (by `launch`) and in each worker (by `train`)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def strategy(cfg, world: int) -> str:
    if world <= 1:
        return "single"
    return "fsdp" if cfg.sharding == "fsdp" else "ddp"


def optimizer(cfg, cuda: bool, fsdp: bool) -> str:
    """The transformers optimizer name; under FSDP one whose state a sharded checkpoint can hold."""
    if cfg.optim == "auto":
        return FSDP_OPTIM if fsdp else ("paged_adamw_8bit" if cuda else "adamw_torch")
    if fsdp and cfg.optim in NOT_UNDER_FSDP:
        raise Sm70Error(f"optim={cfg.optim} cannot be checkpointed under FSDP (PEFT's FSDP+QLoRA guide: saving "
                        f"fails with bitsandbytes' paged/8-bit optimizers); use optim={FSDP_OPTIM} or optim=auto")
    return cfg.optim


def fsdp_config(model, gradient_checkpointing: bool) -> dict:
    """TrainingArguments.fsdp_config: FSDP2, one unit per decoder layer, sharded checkpoints."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base, "_no_split_modules", None) or []
    if not layers:
        raise Sm70Error(f"{type(base).__name__} names no decoder-layer class (_no_split_modules): "
                        "FSDP cannot wrap it layer by layer")
    return {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": list(layers), "state_dict_type": "SHARDED_STATE_DICT",
            "reshard_after_forward": True, "cpu_ram_efficient_loading": False,
            # FSDP's own activation checkpointing: the Trainer's would all-gather every layer twice.
            "activation_checkpointing": gradient_checkpointing}


def promote_to_fsdp(trainer) -> None:
    """On CPU processes accelerate leaves FSDP off (MULTI_CPU); switch the Trainer's accelerator to it."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or state.distributed_type == DistributedType.FSDP:
        return
    if state.distributed_type != DistributedType.MULTI_CPU:
        raise Sm70Error(f"FSDP was asked for, but accelerate set up {state.distributed_type}")
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    trainer.is_fsdp_enabled = True


def check_quantized_load(cfg, device_gb: float) -> None:
    """FSDP + 4-bit: refuse before loading when the whole 4-bit base cannot fit one device, since
    transformers 5.25 puts it whole on every process's GPU before FSDP shards it (the out-of-memory
    would otherwise come minutes into the load, from deep inside bitsandbytes)."""
    from sm70.train.plan import plan_memory

    plan = plan_memory(cfg, device_memory_gb=device_gb)
    if plan.load_gb is not None and plan.load_gb > device_gb:
        raise Sm70Error(
            f"sharding=fsdp with quant=nf4: every process first loads the whole 4-bit base ({plan.load_gb:.1f} GiB) "
            f"onto its GPU ({device_gb:.1f} GiB), because transformers 5.25 has no rank-0-only loading for "
            "quantized models; FSDP shards it only afterwards. Use GPUs with more memory than the 4-bit base (one "
            "48 GB card runs the 70B recipe), or quant=none with enough GPUs to shard the unquantized model. "
            "Published: PEFT's FSDP+QLoRA guide measured 35.6 GB per GPU for Llama-2-70B on 2 GPUs without CPU "
            "offload (19.6 GB with it, which sm70 does not wire in)")


def adapter_state_dict(trainer) -> dict | None:
    """The trained (LoRA) parameters, whole. Under FSDP gathering them is a collective: every rank
    calls this, as PEFT's FSDP guide says; only the trainable parameters are gathered, so the 4-bit
    base never has to fit one process. None where FSDP is off (save_pretrained reads the model)."""
    if not trainer.is_fsdp_enabled:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(trainer.model, options=options)


def peak_memory_per_process(peak_gb: float) -> list[float]:
    """Every process's peak memory (GiB), rank order; a collective when several processes run."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [round(peak_gb, 3)]
    peaks: list = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, round(peak_gb, 3))
    return peaks
