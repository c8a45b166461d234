"""Per-key limits: `rpm` requests and `tpm` tokens in any 60 seconds, and requests in flight.

The rates are moving windows of the `limits` package, kept in this process by default
(`limits_storage=memory://`) or in a store that several gateways behind one load balancer share
(`limits_storage=redis://HOST:6379`), so a key's `rpm` holds across all of them. A key at its limit
gets 429 with `Retry-After` set to when its oldest counted request (or tokens) leaves the window.
Tokens are charged when the request ends (prompt + completion, as the audit line records them): a
long answer fills the key's window up to its `tpm`, and its next request waits until there is room.
When the store cannot be reached, requests under a rate limit fail with 503 rather than go uncounted.

In flight: one key may have at most `in_flight` requests running or queued at once (its keys-file
value, else the server's `key_in_flight`), counted in this gateway, so one key cannot fill the
engine's queue and leave everyone else with "server busy".
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter

from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from sm70.errors import Sm70Error

log = logging.getLogger("sm70.serve")
WINDOW_S = 60


class LimitsUnavailable(Sm70Error):
    """The shared store of the rate limits cannot be reached."""


class Limiter:
    def __init__(self, storage: str = "memory://", window_s: int = WINDOW_S):
        try:
            self.storage = storage_from_string(storage)
        except Exception as e:   # limits' own errors for an unknown scheme or a missing client library
            raise Sm70Error(f"limits_storage: {storage!r}: {e}") from None
        if not self.storage.check():
            raise Sm70Error(f"limits_storage: {storage} cannot be reached")
        self.url, self.window_s = storage, window_s
        self.window = MovingWindowRateLimiter(self.storage)
        self.problem: str | None = None

    def _item(self, kind: str, amount: int) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(amount, self.window_s, namespace=f"sm70-{kind}")

    def _wait(self, item, user: str) -> int:
        reset = self.window.get_window_stats(item, user).reset_time
        return max(1, math.ceil(reset - time.time()))

    def admit(self, user: str, rpm: int | None, tpm: int | None) -> int | None:
        """None, with the request counted; or the seconds to wait before the next one may pass.

        Raises LimitsUnavailable when the store cannot be reached."""
        if rpm is None and tpm is None:
            return None
        try:
            if tpm is not None:
                item = self._item("tpm", tpm)
                if not self.window.test(item, user):
                    return self._wait(item, user)
            if rpm is not None:
                item = self._item("rpm", rpm)
                if not self.window.hit(item, user):
                    return self._wait(item, user)
        except self.storage.base_exceptions as e:
            self._failed(e)
            raise LimitsUnavailable(self.problem) from None
        if self.problem is not None:
            log.warning("limits_storage %s answers again", self.url)
            self.problem = None
        return None

    def charge(self, user: str, tpm: int, tokens: int) -> None:
        """Count a finished request's tokens, up to what the window has room for."""
        if tokens <= 0:
            return
        item = self._item("tpm", tpm)
        try:
            room = self.window.get_window_stats(item, user).remaining
            if room > 0:
                self.window.hit(item, user, cost=min(tokens, room))
        except self.storage.base_exceptions as e:   # the answer has left: nothing to refuse now
            self._failed(e)

    def _failed(self, e: Exception) -> None:
        problem = f"limits_storage {self.url}: {type(e).__name__}: {e}"
        if self.problem != problem:
            log.error("%s; requests under a rate limit are refused with 503 until it answers", problem)
        self.problem = problem


class InFlight:
    """Requests each key has running or queued here. Used from the event loop's thread only."""

    def __init__(self, default: int):
        self.default = default
        self.count: Counter = Counter()

    def enter(self, user: str, limit: int | None) -> bool:
        if self.count[user] >= (limit or self.default):
            return False
        self.count[user] += 1
        return True

    def leave(self, user: str) -> None:
        self.count[user] -= 1
        if self.count[user] <= 0:
            del self.count[user]
