"""Per-key limits: `rpm` requests and `tpm` tokens in any 60 seconds, and requests in flight.

The rates are moving windows of the `limits` package, kept in this process by default
(`limits_storage=memory://`) or in a store that several gateways behind one load balancer share
(`limits_storage=redis://HOST:6379`), so a key's `rpm` holds across all of them. A key at its limit
gets 429 with `Retry-After` set to when its oldest counted request (or tokens) leaves the window.
Tokens are held when the request starts and settled when it ends. Once the prompt's length is known
(tokenized by an embedded engine; bounded from its bytes in upstream mode) the request reserves it plus
its `max_tokens` (its own or the served default); it is admitted only while the window's tokens and
every reservation still in flight fit the key's `tpm`, so ten requests at once cannot each spend the
whole minute. At the end the reservation is released and the window charged what the request really
cost (the engine's count, else sm70's own). The reservations sit beside the window because a moving
window cannot take a hit back: in this process for `memory://`, in the store for `redis://` (so
gateways sharing a key's `rpm` share its reservations too), each with a deadline there so that a
gateway that dies holding some does not hold them for ever. When the store cannot be reached,
requests under a rate limit fail with 503 rather than go uncounted.

In flight: one key may have at most `in_flight` requests running or queued at once (its keys-file
value, else the server's `key_in_flight`), counted in this gateway, so one key cannot fill the
engine's queue and leave everyone else with "server busy".
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from sm70.errors import Sm70Error

log = logging.getLogger("sm70.serve")
WINDOW_S = 60
HOLD_S = 3600   # a reservation in a shared store lapses after this: longer than any answer takes


class LimitsUnavailable(Sm70Error):
    """The shared store of the rate limits cannot be reached."""


class TokensRefused(Exception):
    """A request's most tokens do not fit its key's tpm: now (retry_after seconds), or never (None)."""

    def __init__(self, message: str, retry_after: int | None):
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class LocalHolds:
    """Reservations in this process (`memory://`): each key's reservations by request id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, int]] = {}

    def add(self, user: str, hold: str, tokens: int) -> int:
        """Hold `tokens` (0: hold nothing) and return what the key holds in all."""
        with self._lock:
            held = self._held.setdefault(user, {})
            if tokens:
                held[hold] = tokens
            total = sum(held.values())
            if not held:
                del self._held[user]
            return total

    def remove(self, user: str, hold: str) -> None:
        with self._lock:
            held = self._held.get(user, {})
            held.pop(hold, None)
            if not held:
                self._held.pop(user, None)


# One call: lapsed reservations dropped, this one added, the key's total returned, all atomic, so two
# gateways adding at once each see the other's. KEYS: tokens by id (hash), deadlines (sorted set).
HOLD_SCRIPT = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(lapsed) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
local total = 0
for _, n in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(n) end
return total
"""


class SharedHolds:
    """Reservations in the Redis store the windows are kept in, shared by every gateway using it."""

    def __init__(self, storage: RedisStorage):
        self.redis = storage.get_connection()
        self.script = self.redis.register_script(HOLD_SCRIPT)

    @staticmethod
    def _keys(user: str) -> list[str]:
        tag = "{sm70-held:" + user + "}"   # one hash slot for both keys (Redis Cluster)
        return [tag + ":tokens", tag + ":until"]

    def add(self, user: str, hold: str, tokens: int) -> int:
        now = time.time()
        return int(self.script(keys=self._keys(user), args=[now, hold, tokens, now + HOLD_S, HOLD_S]))

    def remove(self, user: str, hold: str) -> None:
        tokens, until = self._keys(user)
        pipe = self.redis.pipeline()
        pipe.hdel(tokens, hold)
        pipe.zrem(until, hold)
        pipe.execute()


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
        # in memory every call takes microseconds: the gate makes it on the event loop, not in a thread
        self.local = isinstance(self.storage, MemoryStorage)
        if self.local:
            self.holds = LocalHolds()
        elif isinstance(self.storage, RedisStorage):
            self.holds = SharedHolds(self.storage)
        else:
            raise Sm70Error(f"limits_storage: {storage}: token reservations need memory:// or redis:// (or "
                            f"rediss://, redis+sentinel://, redis+cluster://)")

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

    def reserve(self, user: str, tpm: int, tokens: int) -> str:
        """Hold `tokens` of the key's `tpm` until `settle`; the hold's id.

        Raises TokensRefused (the window and the reservations in flight leave no room for them) or
        LimitsUnavailable."""
        if tokens > tpm:
            raise TokensRefused(f"this request may use up to {tokens} tokens (its prompt and max_tokens), more "
                                f"than this key's {tpm} tokens per minute: lower max_tokens or shorten the prompt",
                                None)
        hold = uuid.uuid4().hex
        item = self._item("tpm", tpm)
        try:
            # added first, then checked: of two requests reserving at once the second sees the first
            held = self.holds.add(user, hold, tokens)
            used = tpm - self.window.get_window_stats(item, user).remaining
            if used + held <= tpm:
                return hold
            self.holds.remove(user, hold)
            wait = self._wait(item, user) if used + tokens > tpm else 1
        except self.storage.base_exceptions as e:
            self._failed(e)
            raise LimitsUnavailable(self.problem) from None
        raise TokensRefused(f"this key's token rate limit is reached ({tpm} tokens per minute, counting the "
                            f"requests still running at their max_tokens); retry after {wait} s", wait)

    def settle(self, user: str, tpm: int, hold: str | None, tokens: int) -> None:
        """Charge a finished request's real tokens and release its hold (charged first: never a moment
        when neither counts them)."""
        self.charge(user, tpm, tokens)
        if hold is not None:
            try:
                self.holds.remove(user, hold)
            except self.storage.base_exceptions as e:   # it lapses at its deadline
                self._failed(e)

    def used(self, user: str, tpm: int) -> tuple[int, int]:
        """(tokens in the key's window, tokens its requests in flight hold)."""
        return tpm - self.window.get_window_stats(self._item("tpm", tpm), user).remaining, self.holds.add(user, "", 0)

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
