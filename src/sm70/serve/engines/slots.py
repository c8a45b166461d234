"""Which key's conversation each of llama-server's slots holds, so a key reuses only its own prompts.

llama-server keeps each slot's key/value cache and, asked with `cache_prompt`, skips the prefix a new
prompt shares with it. Reused across keys that is a timing channel (one key could tell from its first
token whether another key's prompt starts with a given text); not reused at all, every turn of every
conversation re-reads its whole prompt (on this machine it cost a third of the 8-client throughput).
So each request names its slot (`id_slot`): a free slot its own key used last, with the cache; else the
free slot unused longest, without it (the slot then belongs to this key). A request waits here when all
slots are busy, as it would have waited inside llama-server.
"""

from __future__ import annotations

import asyncio
import collections
import time


class SlotBook:
    def __init__(self, slots: int):
        self.owner: list[str | None] = [None] * slots
        self.busy = [False] * slots
        self.used = [0.0] * slots
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self, user: str) -> tuple[int, bool]:
        """(the slot, whether its cache is this key's own and may be reused)."""
        while all(self.busy):
            woken = asyncio.get_running_loop().create_future()
            self._waiting.append(woken)
            try:
                await woken
            except asyncio.CancelledError:
                if woken.done() and not woken.cancelled():
                    self._wake()   # the slot freed for this request goes to the next one
                raise
        free = [s for s, busy in enumerate(self.busy) if not busy]
        slot = next((s for s in free if self.owner[s] == user), None)
        if slot is None:
            slot = min(free, key=lambda s: (self.owner[s] is not None, self.used[s]))
        reuse = self.owner[slot] == user
        self.busy[slot], self.owner[slot], self.used[slot] = True, user, time.monotonic()
        return slot, reuse

    def release(self, slot: int) -> None:
        self.busy[slot], self.used[slot] = False, time.monotonic()
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            woken = self._waiting.popleft()
            if not woken.done():
                woken.set_result(None)
                return
