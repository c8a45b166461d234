"""Free-text answers: greedy decoding through transformers (vLLM's is in `sm70.eval.vllm`)."""

from __future__ import annotations


class HFGenerator:
    def __init__(self, model, tokenizer, max_new_tokens: int = 32, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, max(1, batch_size)

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        tok = self.tokenizer
        texts = []
        old_side, tok.padding_side = tok.padding_side, "left"  # new tokens follow every prompt directly
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                # A chat template already wrote BOS into the text; do not add a second one.
                has_bos = tok.bos_token is not None and all(p.startswith(tok.bos_token) for p in chunk)
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=not has_bos)
                enc = {k: v.to(self.model.device) for k, v in enc.items()}
                with torch.inference_mode():
                    out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              pad_token_id=tok.pad_token_id)
                new = out[:, enc["input_ids"].shape[1]:]
                texts += tok.batch_decode(new, skip_special_tokens=True)
        finally:
            tok.padding_side = old_side
        return texts

