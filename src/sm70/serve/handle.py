"""One request's life inside an engine: the events it produces and how its caller reads them.

The engine runs on its own thread; the HTTP layer runs on an asyncio loop. A handle hands events
across (thread-safe), and closing the reader cancels the request so its batch slot is freed.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

from sm70.serve.sampling import SamplingParams


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass(frozen=True)
class Event:
    kind: str                      # "delta", "done" or "error"
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Handle:
    def __init__(self, prompt_ids: list[int], params: SamplingParams):
        self.prompt_ids = prompt_ids
        self.params = params
        self.cancelled = threading.Event()
        try:
            self._loop = asyncio.get_running_loop()
            self._aqueue: asyncio.Queue | None = asyncio.Queue()
        except RuntimeError:
            self._loop, self._aqueue = None, None
        self._queue: queue.Queue = queue.Queue()

    def emit(self, event: Event) -> None:
        """Called from the engine thread."""
        if self._aqueue is not None:
            try:
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, event)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
                self.cancelled.set()
        else:
            self._queue.put(event)

    def cancel(self) -> None:
        self.cancelled.set()

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self._aqueue.get()
                yield event
                if event.kind != "delta":
                    return
        finally:
            self.cancel()  # no-op when finished; frees the slot when the client went away

    def events_sync(self) -> Iterator[Event]:
        try:
            while True:
                event = self._queue.get()
                yield event
                if event.kind != "delta":
                    return
        finally:
            self.cancel()
