"""Per-sequence token choice and streamed detokenization.

Each sequence in a batch keeps its own temperature, top-p and random generator, so a request's
`seed` gives the same answer whether it ran alone or beside seven others.

Degenerate values that pass the protocol's range checks are made safe here rather than refused:
a temperature below `GREEDY_BELOW` is greedy (dividing logits by 1e-45 makes them infinite), and
nucleus sampling always keeps the most likely token (a top_p of 1e-300 rounds to 0 in float32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GREEDY_BELOW = 1e-5


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature < GREEDY_BELOW


def make_generator(seed: int | None):
    import torch

    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)   # the protocol keeps it within torch's range (int64 and up to 2**64-1)
    return g


def choose_token(logits, params: SamplingParams, generator) -> int:
    """One token id from a 1-D logits row: argmax at temperature 0, else nucleus sampling."""
    import torch

    if is_greedy(params):
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p, and always the top token
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        keep[0] = True
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class TextStream:
    """Turns a growing list of token ids into text deltas, honouring stop strings.

    Text that could still turn into a stop string, or that ends in half a UTF-8 character, is held
    back until the next token settles it, so a client never sees text that is later withdrawn.
    """

    tokenizer: object
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    sent: int = 0
    stopped: bool = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for s in self.stop:
            at = text.find(s)
            if at != -1:
                self.stopped = True
                return self._emit(text[:at])
        hold = max((len(s) - 1 for s in self.stop), default=0)
        if text.endswith("\ufffd"):
            hold = max(hold, 1)
        return self._emit(text[: max(self.sent, len(text) - hold)])

    def flush(self) -> str:
        if self.stopped:
            return ""
        return self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _emit(self, text: str) -> str:
        delta = text[self.sent:]
        self.sent = max(self.sent, len(text))
        return delta
