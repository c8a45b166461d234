"""`sm70 model tiny OUT`: a deterministic tiny Llama and a byte-level BPE tokenizer.

It is an ordinary Hugging Face model directory, so every stage loads it through the same
`from_pretrained` path that loads Llama-2-70B. Sizes default to multiples of 64 because
bitsandbytes' 4-bit CPU kernels work in blocks of 64 and fail on other weight shapes.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Iterator

from pydantic import Field

from sm70.atomic import atomic_dir
from sm70.config import Config

# Llama-2's chat format, so `template=chat` exercises the same code path as the real model.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}"
    "{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


class TinyModelConfig(Config):
    out: Path
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 4096
    # Llama's 0.02 suits hidden sizes in the thousands. At hidden 128 it caps every logit near
    # 128 * 0.02 = 2.6 (RMSNorm fixes |h|), so the model cannot become confident and fine-tuning
    # crawls; a fan-in scale (~1/sqrt(hidden)) lets the tiny model learn like a real one.
    initializer_range: float | None = None
    corpus: list[Path] = Field(default_factory=list, description="extra text files for the tokenizer")
    tokenizer: Path | None = Field(None, description="a real model's tokenizer directory to use instead of training "
                                   "one (e.g. for a GGUF export: llama.cpp's converter knows only published tokenizers)")


def sample_texts() -> Iterator[str]:
    """Every string in the bundled samples, in a fixed order (the tokenizer's training text)."""
    root = resources.files("sm70") / "samples"
    for path in sorted(_walk(root), key=lambda p: str(p)):
        text = path.read_text(encoding="utf-8")
        if path.name.endswith(".jsonl"):
            for line in text.splitlines():
                if line.strip():
                    yield from _strings(json.loads(line))
        elif path.name.endswith(".json"):
            yield from _strings(json.loads(text))
        elif path.name.endswith((".txt", ".md")):
            yield text


def _walk(node) -> Iterator:
    for child in node.iterdir():
        if child.is_dir():
            yield from _walk(child)
        else:
            yield child


def _strings(obj) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # Llama prepends <s> to every encoded text; so do we, so that scoring code meets the same case.
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", model_max_length=4096)
    fast.chat_template = LLAMA2_CHAT_TEMPLATE
    return fast


def build_tiny_model(cfg: TinyModelConfig) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = list(sample_texts())
    for extra in cfg.corpus:
        texts.append(Path(extra).read_text(encoding="utf-8"))
    if cfg.tokenizer is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer))
    else:
        tokenizer = train_tokenizer(texts, cfg.vocab_size)

    torch.manual_seed(cfg.seed)
    model_config = LlamaConfig(
        vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, dtype="float32",
        initializer_range=cfg.initializer_range or round(cfg.hidden_size ** -0.5, 4),
    )
    model = LlamaForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(cfg.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    print(f"tiny model ({sum(p.numel() for p in model.parameters()):,} parameters) written to {cfg.out}")
    return Path(cfg.out)
