"""`engine=llama.cpp`: a GGUF served in this process by llama.cpp (the default for model=FILE.gguf).

The tokenizer and chat template are the HF tokenizer transformers rebuilds from the GGUF itself, so
prompts are rendered and counted by the same code as the transformers engine's; token ids are the
GGUF's own (the rebuilt vocabulary keeps them), and tokens and logits come from llama.cpp.

Design: one scheduler thread owns the llama.cpp context and decodes up to `max_batch` sequences
together, each with its own sequence id and its own key/value cache (`max_context` tokens each,
allocated at start: lower max_batch or max_context on a small device). Every step is one
`llama_decode` of a batch holding the newest token of every generating sequence and, in the room
left, prompt chunks of the sequences still reading theirs, so a long prompt neither waits for the
others nor stalls their streams. Requests beyond `max_batch` wait in a bounded queue (`max_queue`,
then `QueueFull`). llama.cpp's calls go through ctypes, which lets go of the GIL, so the event loop
(and `/health`) keeps answering while a step computes.

Why batched rather than one request at a time (`max_batch=1` is that design, and llama-cpp-python's
own server's): one pass over the weights serves every sequence in the batch. Measured on the shared
2-core test machine, 8 clients, threads=1: with an F32 GGUF, whose one-sequence decode waits on
memory, 41 tokens/s against llama_cpp.server's 18; with Q8_0, whose one-sequence decode is already
bound by that CPU's arithmetic, about even (32 vs 33; 8 sequences decode in 1.25x the time of one).

A request's answer does not depend on the traffic beside it: each sequence attends only to its own
cache, and a prompt is always cut into the same chunks (`PROMPT_CHUNK`), because llama.cpp's
attention takes another path, with other roundings, for another number of queries. With Q8_0 the
logits are then bit-identical alone and in a batch (F32's matrix kernels still differ between one
row and several, by ~1e-3). For the same reason a finished sequence's cache is kept for a later
request in whole prompt chunks only (the next turn of a long conversation): reading the rest of a
prompt as a chunk of another length moves its logits by up to ~0.5 with Q8_0, enough to change a
greedy answer, so a short shared system prompt is read afresh each time.

Sampling is llama.cpp's own sampler chain, one per request: greedy at temperature 0, else
temperature, then nucleus over the tempered distribution (as `sampling.choose_token` does), then a
draw seeded by the request's `seed`. Text deltas and stop strings go through `TextStream`, as in
the transformers engine.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

from sm70.errors import Sm70Error
from sm70.serve.engines import batcher
from sm70.serve.engines.registry import EngineSpec, served_name
from sm70.serve.engines.handle import Event, Handle, Outbox
from sm70.serve.engines.llamacpp_context import PROMPT_CHUNK, Context
from sm70.serve.engines.sampling import SamplingParams, TextStream

log = logging.getLogger("sm70.serve")

# Without max_context=, the GGUF's trained context, up to this: llama.cpp allocates the key/value
# cache for the whole context up front, and some GGUFs declare 128K.
DEFAULT_CONTEXT = 4096


@dataclass
class Stats(batcher.Stats):
    reused_tokens: int = 0           # prompt tokens found in a slot's cache instead of read again


@dataclass
class Sequence:
    handle: Handle
    stream: TextStream
    sampler: object
    slot: int
    fed: int = 0                     # prompt tokens in the cache
    out: list[int] = field(default_factory=list)   # tokens sampled; all but the newest are in the cache


class LlamaCppEngine:
    def __init__(self, spec: EngineSpec):
        from sm70.eval.llamacpp import gguf_path, hf_tokenizer, trained_context

        if spec.adapter is not None:
            raise Sm70Error("engine=llama.cpp: adapter= is not supported; merge the adapter into the model "
                            "before `sm70 export gguf`")
        if spec.quant != "none":
            raise Sm70Error("engine=llama.cpp: quant= does not apply; a GGUF carries its own quantization "
                            "(choose it at `sm70 export gguf quant=...`)")
        path = gguf_path(str(spec.model))
        self.tokenizer = hf_tokenizer(path)
        self.max_context = min(spec.max_context or DEFAULT_CONTEXT, trained_context(path))
        self.model_ids = [served_name(spec)]
        self.max_batch, self.max_queue = spec.max_batch, spec.max_queue
        self.llama = Context(path, self.max_context, self.max_batch, spec.threads)
        self.stats = Stats()
        self._waiting: collections.deque[Handle] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._rows: list[Sequence] = []
        self._kept: list[list[int]] = [[] for _ in range(self.max_batch)]  # prompt tokens in each slot's cache
        self._outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name="sm70-llamacpp", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, model_id: str) -> Handle:
        return batcher.enqueue(Handle(prompt_ids, params), self._waiting, self._wake, self.max_queue)

    def snapshot(self) -> dict:
        return {"engine": "llama.cpp", "running": len(self._rows), "waiting": len(self._waiting),
                "max_batch": self.max_batch, **self.stats.counters()}

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)
        if not self._thread.is_alive():  # a step still running owns the context: leave it to the exit
            self.llama.close()

    # -- the scheduler thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._rows and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    break
                free = sorted(set(range(self.max_batch)) - {row.slot for row in self._rows})
                joining = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting)))]
            for handle in joining:
                if handle.cancelled.is_set():
                    self.stats.cancelled += 1
                    continue
                if not handle.prompt_ids:  # llama.cpp has nothing to decode, so nothing to sample from
                    self._outbox.put(handle, Event("error", text="the prompt is empty: nothing to continue"))
                    continue
                try:
                    sampler = self.llama.sampler(handle.params)
                except Exception as e:  # a sampler llama.cpp refused: this request alone fails
                    self._fail([handle], e, "the model failed on this request")
                    continue
                row = Sequence(handle, TextStream(self.tokenizer, handle.params.stop), sampler, free[0])
                self._place(row, free)
                self._rows.append(row)
            if self._rows:
                self._step()
            self._outbox.flush()
        for row in list(self._rows):
            self._outbox.put(row.handle, Event("error", text="the server is shutting down"))
            self._retire(row)
        self._outbox.flush()

    def _place(self, row: Sequence, free: list[int]) -> None:
        """Seat a request in the free slot whose cache starts with most of its prompt, and keep whole
        chunks of that start: the next turn of a conversation reads only what is new. Only prompt tokens
        are kept, and only whole chunks, so the kept part is exactly what reading it afresh computes."""
        prompt = row.handle.prompt_ids
        shared = {slot: _common_prefix(self._kept[slot], prompt) for slot in free}
        row.slot = max(free, key=lambda slot: (shared[slot], -slot))
        free.remove(row.slot)
        # the prompt's last token is always read again: its logits give the first token
        keep = min(shared[row.slot], len(prompt) - 1) // PROMPT_CHUNK * PROMPT_CHUNK
        self._kept[row.slot] = []
        try:
            self.llama.forget(row.slot, keep)
        except RuntimeError:
            keep = 0
        row.fed = keep
        self.stats.reused_tokens += keep

    def _step(self) -> None:
        """One llama_decode: the newest token of every generating row, then the next prompt chunk of
        each row still reading its prompt, as many as the batch has room for."""
        outputs: list[tuple[Sequence, int]] = []
        generating = [r for r in self._rows if r.fed == len(r.handle.prompt_ids)]
        for row in generating:
            outputs.append((row, self.llama.add(row.out[-1], row.fed + len(row.out) - 1, row.slot, True)))
        room, in_batch = self.llama.n_batch - len(generating), list(generating)
        for row in self._rows:
            prompt = row.handle.prompt_ids
            chunk = prompt[row.fed:row.fed + PROMPT_CHUNK]
            if row.fed == len(prompt) or len(chunk) > room:
                continue
            for k, token in enumerate(chunk):
                index = self.llama.add(token, row.fed + k, row.slot, row.fed + k == len(prompt) - 1)
            row.fed += len(chunk)
            room -= len(chunk)
            in_batch.append(row)
            if row.fed == len(prompt):
                outputs.append((row, index))
        try:
            self.llama.decode()
        except Exception as e:  # one forward pass for all of them: nothing tells them apart
            self._fail([row.handle for row in in_batch], e, "the model failed on this batch")
            for row in in_batch:
                self._retire(row, keep=False)
            return
        self.stats.steps += 1
        self.stats.batch_sizes[len(in_batch)] += 1
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(in_batch))
        for row, index in outputs:
            try:
                done = self._advance(row, self.llama.sample(row.sampler, index))
            except Exception as e:  # this row's sampling or detokenizing: it alone ends
                self._fail([row.handle], e, "the model failed on this request")
                done = True
            if done:
                self._retire(row)
        for row in list(self._rows):
            if row.handle.cancelled.is_set():   # still reading its prompt, or between tokens
                self.stats.cancelled += 1
                self._retire(row)

    def _advance(self, row: Sequence, token: int) -> bool:
        params, handle = row.handle.params, row.handle
        if handle.cancelled.is_set():
            self.stats.cancelled += 1
            return True
        if self.llama.is_end(token) and not params.ignore_eos:
            return self._finish(row, "stop")
        row.out.append(token)
        delta = row.stream.push(token)
        if delta:
            self._outbox.put(handle, Event("delta", text=delta, completion_tokens=len(row.out)))
        if row.stream.stopped:
            return self._finish(row, "stop")
        if len(row.out) >= params.max_tokens:
            return self._finish(row, "length")
        return False

    def _finish(self, row: Sequence, reason: str) -> bool:
        tail = row.stream.flush()
        if tail:
            self._outbox.put(row.handle, Event("delta", text=tail, completion_tokens=len(row.out)))
        self._outbox.put(row.handle, Event("done", finish_reason=reason, prompt_tokens=len(row.handle.prompt_ids),
                                           completion_tokens=len(row.out)))
        self.stats.finished += 1
        return True

    def _fail(self, handles: list[Handle], error: Exception, message: str) -> None:
        log.error("engine step failed: %s", type(error).__name__)
        self.stats.errors += len(handles)
        for handle in handles:
            self._outbox.put(handle, Event("error", text=message))

    def _retire(self, row: Sequence, keep: bool = True) -> None:
        """Free the row's slot; its prompt's cache stays for a request that starts the same way, unless a
        failed step left the cache in a state nobody knows."""
        if row in self._rows:
            self._rows.remove(row)
            if keep:
                self._kept[row.slot] = row.handle.prompt_ids[:row.fed]
            else:
                self.llama.forget(row.slot)
            self.llama.lib.llama_sampler_free(row.sampler)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
