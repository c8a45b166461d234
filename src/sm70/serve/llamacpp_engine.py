"""`engine=llama.cpp`: a GGUF served in this process by llama.cpp (the default for model=FILE.gguf).

The tokenizer and chat template are the HF tokenizer transformers rebuilds from the GGUF itself, so
prompts are rendered and counted by the same code as the transformers engine's; token ids are the
GGUF's own (the rebuilt vocabulary keeps them), and tokens and logits come from llama.cpp.

Design: one scheduler thread owns the llama.cpp context; requests wait in a bounded queue
(`max_queue`, then `QueueFull`). The thread runs one sequence at a time, so a second client waits
for the first to finish. llama.cpp's calls go through ctypes, which lets go of the GIL, so the event
loop (and `/health`) keeps answering while a step computes.

Sampling is llama.cpp's own sampler chain, one per request: greedy at temperature 0, else
temperature, then nucleus over the tempered distribution (as `sampling.choose_token` does), then a
draw seeded by the request's `seed`. Text deltas and stop strings go through `TextStream`, as in
the transformers engine.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
from dataclasses import dataclass, field

from sm70.errors import Sm70Error
from sm70.serve.engines import EngineSpec, served_name
from sm70.serve.handle import Event, Handle, Outbox, QueueFull
from sm70.serve.sampling import SamplingParams, TextStream, is_greedy

log = logging.getLogger("sm70.serve")

# Without max_context=, the GGUF's trained context, up to this: llama.cpp allocates the key/value
# cache for the whole context up front, and some GGUFs declare 128K.
DEFAULT_CONTEXT = 4096
N_BATCH = 512    # tokens per llama_decode call: a long prompt is fed in chunks of this


class Context:
    """A llama.cpp model and context with room for `n_seq` sequences of `n_ctx` tokens each."""

    def __init__(self, path, n_ctx: int, n_seq: int, threads: int | None):
        from sm70.export.llamacpp import require

        lib = self.lib = require()
        # llama-cpp-python prints llama.cpp's log lines at or above this logger's level
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
        if not self.model:
            raise Sm70Error(f"engine=llama.cpp: llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        # a separate cache per sequence (kv_unified off): every one of them can reach n_ctx
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * n_seq, n_seq, False
        params.n_batch = params.n_ubatch = N_BATCH
        params.no_perf = True
        if threads:
            params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise Sm70Error(f"engine=llama.cpp: llama.cpp could not make a context of {n_ctx} x {n_seq} tokens")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(N_BATCH, 0, 1)
        self.size = 0

    def is_end(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token to the next batch; its index there (where its logits are read)."""
        b, i = self.batch, self.size
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        self.size += 1
        return i

    def decode(self) -> None:
        self.batch.n_tokens, self.size = self.size, 0
        code = self.lib.llama_decode(self.ctx, self.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    def forget(self, seq: int) -> None:
        self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def sampler(self, params: SamplingParams):
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if is_greedy(params):
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
            if params.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(_seed32(params.seed, lib)))
        return chain

    def sample(self, chain, index: int) -> int:
        return self.lib.llama_sampler_sample(chain, self.ctx, index)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)


def _seed32(seed: int | None, lib) -> int:
    # llama.cpp's draw takes 32 bits, and 0xFFFFFFFF there means "a random seed"
    return lib.LLAMA_DEFAULT_SEED if seed is None else seed % 0xFFFFFFFF


@dataclass
class Sequence:
    handle: Handle
    stream: TextStream
    sampler: object
    slot: int
    fed: int = 0                     # prompt tokens already in the cache
    last: int = -1                   # newest token, the next step's input
    generated: int = 0

    @property
    def pos(self) -> int:
        return self.fed + self.generated


@dataclass
class Stats:
    steps: int = 0
    max_batch_seen: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    finished: int = 0
    cancelled: int = 0
    errors: int = 0


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
        self.max_batch, self.max_queue = 1, spec.max_queue
        self.llama = Context(path, self.max_context, self.max_batch, spec.threads)
        self.stats = Stats()
        self._waiting: collections.deque[Handle] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._rows: list[Sequence] = []
        self._outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name="sm70-llamacpp", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, model_id: str) -> Handle:
        handle = Handle(prompt_ids, params)
        with self._wake:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (max_queue={self.max_queue})")
            self._waiting.append(handle)
            self._wake.notify()
        return handle

    def snapshot(self) -> dict:
        s = self.stats
        return {"engine": "llama.cpp", "running": len(self._rows), "waiting": len(self._waiting),
                "steps": s.steps, "max_batch": self.max_batch, "max_batch_seen": s.max_batch_seen,
                "batch_sizes": {str(k): v for k, v in sorted(s.batch_sizes.items())},
                "finished": s.finished, "cancelled": s.cancelled, "errors": s.errors}

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
                self._rows.append(Sequence(handle, TextStream(self.tokenizer, handle.params.stop), sampler,
                                           free.pop(0)))
            if self._rows:
                self._step()
            self._outbox.flush()
        for row in list(self._rows):
            self._outbox.put(row.handle, Event("error", text="the server is shutting down"))
            self._retire(row)
        self._outbox.flush()

    def _step(self) -> None:
        """One llama_decode: the newest token of every generating row, then prompt chunks of the rows
        still reading theirs, as far as the batch has room."""
        outputs: list[tuple[Sequence, int]] = []
        room = N_BATCH
        rows = [r for r in self._rows if r.fed == len(r.handle.prompt_ids)]
        rows += [r for r in self._rows if r.fed < len(r.handle.prompt_ids)]
        in_batch = []
        for row in rows:
            if room == 0:
                break
            in_batch.append(row)
            prompt = row.handle.prompt_ids
            if row.fed == len(prompt):
                outputs.append((row, self.llama.add(row.last, row.pos - 1, row.slot, True)))
                room -= 1
                continue
            chunk = prompt[row.fed:row.fed + room]
            for k, token in enumerate(chunk):
                index = self.llama.add(token, row.fed + k, row.slot, row.fed + k == len(prompt) - 1)
            row.fed += len(chunk)
            room -= len(chunk)
            if row.fed == len(prompt):
                outputs.append((row, index))
        try:
            self.llama.decode()
        except Exception as e:  # one forward pass for all of them: nothing tells them apart
            self._fail([row.handle for row in in_batch], e, "the model failed on this batch")
            for row in in_batch:
                self._retire(row)
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
        row.last = token
        if self.llama.is_end(token) and not params.ignore_eos:
            return self._finish(row, "stop")
        row.generated += 1
        delta = row.stream.push(token)
        if delta:
            self._outbox.put(handle, Event("delta", text=delta, completion_tokens=row.generated))
        if row.stream.stopped:
            return self._finish(row, "stop")
        if row.generated >= params.max_tokens:
            return self._finish(row, "length")
        return False

    def _finish(self, row: Sequence, reason: str) -> bool:
        tail = row.stream.flush()
        if tail:
            self._outbox.put(row.handle, Event("delta", text=tail, completion_tokens=row.generated))
        self._outbox.put(row.handle, Event("done", finish_reason=reason, prompt_tokens=len(row.handle.prompt_ids),
                                           completion_tokens=row.generated))
        self.stats.finished += 1
        return True

    def _fail(self, handles: list[Handle], error: Exception, message: str) -> None:
        log.error("engine step failed: %s", type(error).__name__)
        self.stats.errors += len(handles)
        for handle in handles:
            self._outbox.put(handle, Event("error", text=message))

    def _retire(self, row: Sequence) -> None:
        if row in self._rows:
            self._rows.remove(row)
            self.llama.forget(row.slot)
            self.llama.lib.llama_sampler_free(row.sampler)
