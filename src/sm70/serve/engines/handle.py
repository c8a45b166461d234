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

from sm70.serve.engines.sampling import SamplingParams


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass(frozen=True)
class Event:
    kind: str                      # "delta", "done" or "error"
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0     # on a delta: tokens generated up to and including it


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
        """One event, from any thread (engines that batch their hand-overs use `Outbox`)."""
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
                for event in _coalesce([await self._aqueue.get()], self._aqueue):
                    yield event
                    if event.kind != "delta":
                        return
        finally:
            self.cancel()  # no-op when finished; frees the slot when the client went away

    def events_sync(self) -> Iterator[Event]:  # for in-process callers (terminal chat, tests)
        try:
            while True:
                event = self._queue.get()
                yield event
                if event.kind != "delta":
                    return
        finally:
            self.cancel()


class Outbox:
    """Collects one engine step's events and hands them over with one wake-up per event loop.

    Waking the loop once per token per request makes the HTTP thread fight the engine thread for
    the GIL at every row; one hand-over per step keeps that cost flat as the batch grows.
    """

    def __init__(self):
        self._items: list[tuple[Handle, Event]] = []

    def put(self, handle: Handle, event: Event) -> None:
        self._items.append((handle, event))

    def flush(self) -> None:
        items, self._items = self._items, []
        by_loop: dict = {}
        for handle, event in items:
            if handle._aqueue is None:
                handle._queue.put(event)
            else:
                by_loop.setdefault(handle._loop, []).append((handle, event))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
                for handle, _ in batch:
                    handle.cancelled.set()


def _deliver(batch: list[tuple[Handle, Event]]) -> None:
    for handle, event in batch:
        handle._aqueue.put_nowait(event)


def _coalesce(events: list[Event], pending: asyncio.Queue) -> list[Event]:
    """Merge the text deltas already waiting into one: a reader that fell behind (busy loop, slow
    client) then sends one SSE event per wake-up instead of one per token."""
    while not pending.empty():
        events.append(pending.get_nowait())
    merged: list[Event] = []
    for event in events:
        if merged and merged[-1].kind == "delta" and event.kind == "delta":
            merged[-1] = Event("delta", text=merged[-1].text + event.text, completion_tokens=event.completion_tokens)
        else:
            merged.append(event)
    return merged
