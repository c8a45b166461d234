"""The llama.cpp calls of the device engine (llamacpp_engine.py): one model and context with a
key/value cache per sequence, a batch to fill, decode, per-request sampler chains. The engine
decides what goes into each batch; this module only talks to llama.cpp."""

from __future__ import annotations

import logging

from sm70.errors import Sm70Error
from sm70.serve.engines.sampling import SamplingParams, is_greedy

PROMPT_CHUNK = 256  # prompt tokens one sequence reads per step (beside one token of each generating one)


class Context:
    """A llama.cpp model and context with room for `n_seq` sequences of `n_ctx` tokens each."""

    def __init__(self, path, n_ctx: int, n_seq: int, threads: int | None):
        from sm70.export.llamacpp import require

        lib = self.lib = require()
        # llama-cpp-python prints llama.cpp's log lines at or above this logger's level
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        if n_seq > lib.llama_max_parallel_sequences():
            raise Sm70Error(f"engine=llama.cpp: max_batch={n_seq} is more than llama.cpp's "
                            f"{lib.llama_max_parallel_sequences()} sequences")
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
        if not self.model:
            raise Sm70Error(f"engine=llama.cpp: llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        # a separate cache per sequence (kv_unified off): every one of them can reach n_ctx
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * n_seq, n_seq, False
        # one ubatch per step: llama.cpp would otherwise cut a prompt chunk where the traffic falls
        self.n_batch = params.n_batch = params.n_ubatch = PROMPT_CHUNK + n_seq
        params.no_perf = True
        if threads:
            params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise Sm70Error(f"engine=llama.cpp: llama.cpp could not make a context of {n_ctx} x {n_seq} tokens")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(self.n_batch, 0, 1)
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

    def forget(self, seq: int, start: int = 0) -> None:
        """Drop sequence `seq`'s cache from position `start` on."""
        if not self.lib.llama_memory_seq_rm(self.memory, seq, start, -1):
            self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)  # a cache that cannot be cut mid-way
            raise RuntimeError("llama.cpp cannot cut this model's cache")

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
