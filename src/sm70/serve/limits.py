"""Per-key rate limits from the keys file: `rpm` requests and `tpm` tokens in any 60 seconds.

A sliding window, not a bucket: a key at its limit gets 429 with `Retry-After` set to when its
oldest counted request (or enough of its tokens) leaves the window. Tokens are charged when the
request ends (prompt + completion, as the audit line records them), so a long answer can take a
key past `tpm` once; its next requests wait until the window has room again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

WINDOW_S = 60.0


class Limiter:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque] = {}
        self._tokens: dict[str, deque] = {}    # (time, tokens)

    def _trim(self, user: str, now: float) -> tuple[deque, deque]:
        reqs = self._requests.setdefault(user, deque())
        toks = self._tokens.setdefault(user, deque())
        while reqs and now - reqs[0] >= WINDOW_S:
            reqs.popleft()
        while toks and now - toks[0][0] >= WINDOW_S:
            toks.popleft()
        return reqs, toks

    def admit(self, user: str, rpm: int | None, tpm: int | None) -> int | None:
        """None, with the request counted; or the seconds to wait before the next one may pass."""
        if rpm is None and tpm is None:
            return None
        with self._lock:
            now = self.clock()
            reqs, toks = self._trim(user, now)
            wait = 0.0
            if rpm is not None and len(reqs) >= rpm:
                wait = WINDOW_S - (now - reqs[len(reqs) - rpm])
            if tpm is not None:
                used = sum(n for _, n in toks)
                for t, n in toks:          # the oldest tokens leave first
                    if used < tpm:
                        break
                    used -= n
                    wait = max(wait, WINDOW_S - (now - t))
            if wait > 0:
                return max(1, math.ceil(wait))
            reqs.append(now)
            return None

    def charge(self, user: str, tokens: int) -> None:
        if tokens > 0 and user in self._tokens:
            with self._lock:
                self._tokens[user].append((self.clock(), tokens))
