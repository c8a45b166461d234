"""The embedded engine: a transformers model decoded by one scheduler thread, continuously batched.

Requests wait in a queue. Between decoding steps the scheduler prefills the waiting ones (up to
`max_batch` running at once) and merges them into the running batch: rows are left-padded so every
row's newest token sits in the last column, and each row carries its own positions, so a row that
joins late sees exactly the cache it would have had alone. Finished or cancelled rows leave the
batch at once and their cache columns are trimmed. One forward pass then advances every row by one
token; that is where the throughput under concurrent load comes from.

A failure is kept to the requests it belongs to: choosing or decoding one row's token fails that
row alone, a failed prefill fails only the requests that were joining, and only a failed decoding
step (one forward pass for every row, nothing to tell them apart) fails the running batch.

transformers' own continuous batching (`generate_batch`) needs paged-attention kernels and owns
the request loop; this scheduler keeps per-request streaming, cancellation and sampling in our
hands with a plain `DynamicCache`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from dataclasses import dataclass, field

from sm70.serve.engines.handle import Event, Handle, Outbox, QueueFull
from sm70.serve.engines.sampling import SamplingParams, TextStream, choose_token, is_greedy, make_generator

log = logging.getLogger("sm70.serve")


@dataclass
class Row:
    handle: Handle
    stream: TextStream
    generator: object
    length: int                     # real (unpadded) tokens in the cache for this row
    last: int = -1                  # newest token, the next step's input
    generated: int = 0


@dataclass
class Stats:
    steps: int = 0
    max_batch_seen: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    finished: int = 0
    cancelled: int = 0
    errors: int = 0

    def counters(self) -> dict:
        """Every counter for /ready, a subclass's own ones included."""
        out = dataclasses.asdict(self)
        out["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        return out


def enqueue(handle: Handle, waiting, wake: threading.Condition, max_queue: int) -> Handle:
    """A request joins an engine's bounded wait list and wakes its scheduler thread."""
    with wake:
        if len(waiting) >= max_queue:
            raise QueueFull(f"{len(waiting)} requests are already waiting (max_queue={max_queue})")
        waiting.append(handle)
        wake.notify()
    return handle


class Batcher:
    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_queue: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.eos_ids = _eos_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        self.stats = Stats()
        self._waiting: collections.deque[Handle] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._rows: list[Row] = []
        self._mask = None               # [rows, columns] attention mask, left-padded
        self._cache = None
        self._outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name="sm70-batcher", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Handle:
        return enqueue(Handle(prompt_ids, params), self._waiting, self._wake, self.max_queue)

    def snapshot(self) -> dict:
        return {"running": len(self._rows), "waiting": len(self._waiting), "max_batch": self.max_batch,
                **self.stats.counters()}

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10)

    # -- the scheduler thread ----------------------------------------------------------------
    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._waiting and not self._rows and not self._stopping:
                        self._wake.wait()
                    if self._stopping:
                        break
                    room = self.max_batch - len(self._rows)
                    joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                joining = [h for h in joining if not self._drop_if_cancelled(h)]
                if joining:
                    self._step(self._prefill, joining, joining, "the model failed on this request")
                elif self._rows:
                    self._step(self._decode, None, [row.handle for row in self._rows],
                               "the model failed on this batch")
                self._outbox.flush()

    def _step(self, work, arg, handles: list[Handle], message: str) -> None:
        """Run one prefill or decoding step; if it fails, fail `handles` (and only them) and go on."""
        rows = list(self._rows)
        try:
            work(arg) if arg is not None else work()
        except Exception as e:  # one bad step must not stop the server
            log.error("engine step failed: %s", type(e).__name__)
            self.stats.errors += len(handles)
            for h in handles:
                self._outbox.put(h, Event("error", text=message))
            failed = {id(h) for h in handles}
            if any(id(row.handle) in failed for row in rows) or len(self._rows) != len(rows):
                # the running rows' cache may be half-updated: they cannot go on either
                for row in self._rows:
                    if id(row.handle) not in failed:
                        self._outbox.put(row.handle, Event("error", text="the model failed on this batch"))
                self._rows, self._mask, self._cache = [], None, None

    def _drop_if_cancelled(self, handle: Handle) -> bool:
        if handle.cancelled.is_set():
            self.stats.cancelled += 1
            return True
        return False

    def _prefill(self, handles: list[Handle]) -> None:
        import torch
        from transformers import DynamicCache

        width = max(len(h.prompt_ids) for h in handles)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(h.prompt_ids)) + h.prompt_ids for h in handles])
        mask = torch.tensor([[0] * (width - len(h.prompt_ids)) + [1] * len(h.prompt_ids) for h in handles])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
        rows = [Row(h, TextStream(self.tokenizer, h.params.stop), make_generator(h.params.seed), len(h.prompt_ids))
                for h in handles]
        self._merge(rows, mask, out.cache)
        self._advance(out.logits[:, -1, :], first=len(self._rows) - len(rows))

    def _decode(self) -> None:
        import torch

        ids = torch.tensor([[row.last] for row in self._rows])
        positions = torch.tensor([[row.length] for row in self._rows])
        self._mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=self._mask.dtype)], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=self._mask.to(self.device),
                         position_ids=positions.to(self.device), cache=self._cache, use_cache=True,
                         logits_to_keep=1)
        self._cache = out.cache
        for row in self._rows:
            row.length += 1
        self._advance(out.logits[:, -1, :], first=0)

    def _merge(self, rows: list[Row], mask, cache) -> None:
        """Append freshly prefilled rows to the running batch, left-padding the shorter side."""
        import torch

        if not self._rows:
            self._rows, self._mask, self._cache = rows, mask, cache
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def left_pad(t, dim_from_end: int):
            missing = width - t.shape[-dim_from_end]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[-dim_from_end] = missing
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=-dim_from_end)

        # everything is computed before anything is assigned: a failure here leaves the batch as it was
        merged_mask = torch.cat([left_pad(self._mask, 1), left_pad(mask, 1)], dim=0)
        merged = [(torch.cat([left_pad(old.keys, 2), left_pad(new.keys, 2)], dim=0),
                   torch.cat([left_pad(old.values, 2), left_pad(new.values, 2)], dim=0))
                  for old, new in zip(self._cache.layers, cache.layers)]
        for layer, (keys, values) in zip(self._cache.layers, merged):
            layer.keys, layer.values = keys, values
        self._mask, self._rows = merged_mask, self._rows + rows

    def _advance(self, logits, first: int) -> None:
        """Choose the next token for rows[first:], stream it, and retire rows that are done."""
        import torch

        self.stats.steps += 1
        self.stats.batch_sizes[len(self._rows)] += 1
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(self._rows))
        keep = list(range(first))
        greedy = logits.argmax(dim=-1).tolist()   # one call for every temperature-0 row
        for i, row in enumerate(self._rows[first:], start=first):
            params = row.handle.params
            try:
                token = greedy[i - first] if is_greedy(params) else choose_token(logits[i - first], params,
                                                                                 row.generator)
                done = self._step_row(row, token)
            except Exception as e:  # this row's sampling or detokenizing: it alone ends
                log.error("sequence failed: %s", type(e).__name__)
                self.stats.errors += 1
                self._outbox.put(row.handle, Event("error", text="the model failed on this request"))
                done = True
            if not done:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._mask, self._cache = None, None
            return
        index = torch.tensor(keep)
        self._mask = self._mask[index]
        self._cache.batch_select_indices(index.to(self.device))
        # columns that are padding in every remaining row carry nothing: drop them
        start = int(self._mask.any(dim=0).int().argmax())
        if start:
            self._mask = self._mask[:, start:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]

    def _step_row(self, row: Row, token: int) -> bool:
        params, handle = row.handle.params, row.handle
        if handle.cancelled.is_set():
            self.stats.cancelled += 1
            return True
        row.last = token
        if token in self.eos_ids and not params.ignore_eos:
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

    def _finish(self, row: Row, reason: str) -> bool:
        tail = row.stream.flush()
        if tail:
            self._outbox.put(row.handle, Event("delta", text=tail, completion_tokens=row.generated))
        self._outbox.put(row.handle, Event("done", finish_reason=reason, prompt_tokens=len(row.handle.prompt_ids),
                              completion_tokens=row.generated))
        self.stats.finished += 1
        return True


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
