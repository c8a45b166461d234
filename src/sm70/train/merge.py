"""`sm70 merge base=DIR adapter=DIR out=DIR`: fold a LoRA adapter into its base model.

The base is loaded unquantized (fp32 on the CPU, bf16 on a GPU): adding the low-rank update to
4-bit weights would re-quantize it away (the QLoRA reference code's merge bug, artidoro/qlora#28).
"""

from __future__ import annotations

from pathlib import Path

from sm70.atomic import atomic_dir
from sm70.config import Config


class MergeConfig(Config):
    base: str
    adapter: Path
    out: Path
    dtype: str = "auto"  # fp32 on the CPU, bf16 on a GPU that has it


def merge(cfg: MergeConfig) -> Path:
    from transformers import AutoTokenizer

    from sm70.model.load import load_model, load_tokenizer

    model = load_model(cfg.base, adapter=cfg.adapter, quant="none", dtype=cfg.dtype,
                       device_map={"": "cpu"})  # a whole unquantized 70B fits no single GPU
    merged = model.merge_and_unload()
    # The adapter directory carries the tokenizer and chat template it was trained with.
    if (Path(cfg.adapter) / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(cfg.adapter))
    else:
        tokenizer = load_tokenizer(cfg.base)
    with atomic_dir(cfg.out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    print(f"merged {cfg.adapter} into {cfg.base}: {cfg.out}")
    return Path(cfg.out)
