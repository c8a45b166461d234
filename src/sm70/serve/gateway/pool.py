"""The upstream engines and how a request picks one: least outstanding requests among the healthy.

Ejection follows Envoy's outlier detection rather than one strike: an engine that refuses the
connection is out at once (it cannot answer anyone); one that answers badly (a 5xx, a broken
stream, a malformed body) is taken out after `eject_after` failures in a row, and only while fewer
than `max_ejected` of the engines are already out that way, so a burst of bad answers never takes
every engine out while one still accepts connections. The health loop brings an engine back once
`GET {url}/models` answers again, for one taken out for its answers no sooner than `eject_for_s`
later (its model list may answer while its completions fail); the same probe learns which model ids
it serves. The engines' own credential (`upstream_key`) goes only to them, and nothing they set
(cookies) comes back to them; their redirects are not followed, their bodies not decompressed
(`identity` is asked for: a compressed body is a broken one, never a decompression bomb), and no
proxy from the environment is used.

The client is aiohttp's: its C parser reads a streamed event for about a third of the CPU that
httpx's pure-Python one takes, and on a host whose cores the engine needs that is the gateway's
main cost. Idle connections are kept for less time than llama.cpp's server and uvicorn (vLLM) keep
them (5 s), so one the engine is closing is seldom reused (a request that meets one is sent again,
proxy.py); a stream's connection is not kept at all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from sm70.errors import Sm70Error

log = logging.getLogger("sm70.serve")
KEEPALIVE_S = 4.0
PROBE = aiohttp.ClientTimeout(total=2.0)
MAX_MODELS = 1 << 20   # bytes of an engine's model list


@dataclass
class Upstream:
    url: str                        # the OpenAI base, e.g. http://10.0.0.5:8000/v1
    name: str                       # its alias (engine-1, ...): what audit lines, /ready and /metrics show
    address: str = ""               # host:port, for the server's own log only: key holders never see it
    healthy: bool = False
    outstanding: int = 0
    models: list[str] = field(default_factory=list)
    served: int = 0
    failures: int = 0
    in_a_row: int = 0               # failures since its last good answer
    ejected: bool = False           # taken out for its answers (counts against `max_ejected`)
    ejected_until: float = 0.0      # monotonic time before which the probe leaves it out

    @classmethod
    def parse(cls, url: str, alias: str) -> "Upstream":
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Sm70Error(f"upstream: {url!r} is not an http(s) URL such as http://127.0.0.1:8001/v1")
        if parts.username or parts.password:
            raise Sm70Error(f"upstream: {parts.hostname}: put the engine's credential in upstream_key=FILE, "
                            f"not in the URL (it would be logged)")
        return cls(url=url.strip().rstrip("/"), name=alias, address=parts.netloc)


class Pool:
    def __init__(self, urls: list[str], key: str | None, *, timeout_s: float, health_interval_s: float,
                 eject_after: int = 3, max_ejected: float = 0.5, eject_for_s: float = 10.0, uds: str | None = None):
        self.upstreams = [Upstream.parse(u, f"engine-{i}") for i, u in enumerate(urls, 1)]
        if not self.upstreams:
            raise Sm70Error("upstream: no URL given")
        for u in self.upstreams:
            log.info("upstream %s is %s", u.name, u.address)
        self.eject_after, self.max_ejected, self.eject_for_s = eject_after, max_ejected, eject_for_s
        self.headers = {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {key}"} if key else {})}
        # the longest wait for the engine's next bytes, not for the whole answer (a long one streams for minutes)
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=timeout_s)
        self.health_interval_s = health_interval_s
        self.uds = uds   # a Unix socket every connection goes to (sm70's own llama-server), instead of the URLs' hosts
        self.client: aiohttp.ClientSession | None = None
        self._turn = itertools.count()
        self._task: asyncio.Task | None = None

    # -- what the router asks an engine --------------------------------------------------------
    max_context = None     # each engine checks its own context limit and answers 400

    @property
    def model_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for up in self.upstreams:
            seen.update(dict.fromkeys(up.models))
        return list(seen)

    def snapshot(self) -> dict:
        return {"engine": "upstream", "outstanding": sum(u.outstanding for u in self.upstreams),
                "upstreams": [{"name": u.name, "healthy": u.healthy, "outstanding": u.outstanding,
                               "served": u.served, "failures": u.failures, "models": u.models}
                              for u in self.upstreams]}

    @property
    def problem(self) -> str | None:
        if any(u.healthy for u in self.upstreams):
            return None
        return "no upstream engine is answering: " + ", ".join(u.name for u in self.upstreams)

    def close(self) -> None:
        pass   # the client and the health loop end with the app (`run`)

    # -- choosing ------------------------------------------------------------------------------
    def pick(self, model: str, exclude: list[Upstream]) -> Upstream | None:
        ready = [u for u in self.upstreams if u.healthy and u not in exclude and model in u.models]
        if not ready:
            return None
        low = min(u.outstanding for u in ready)
        tied = [u for u in ready if u.outstanding == low]
        return tied[next(self._turn) % len(tied)]   # rotate among equals, so an idle pool spreads too

    def fail(self, up: Upstream, why: str, *, unreachable: bool = False) -> None:
        """A request to `up` failed; `unreachable`: it did not even accept the connection."""
        up.failures += 1
        up.in_a_row += 1
        if not up.healthy:
            return
        if not unreachable:
            if up.in_a_row < self.eject_after:
                return
            out = sum(u.ejected for u in self.upstreams)
            if out + 1 > self.max_ejected * len(self.upstreams):
                log.warning("upstream %s failed %d times in a row (%s); kept in: %d of %d engines are "
                            "already out for their answers", up.name, up.in_a_row, why, out, len(self.upstreams))
                return
            up.ejected, up.ejected_until = True, time.monotonic() + self.eject_for_s
        log.warning("upstream %s (%s) taken out: %s", up.name, up.address, why)
        up.healthy = False

    def succeed(self, up: Upstream) -> None:
        up.served += 1
        up.in_a_row = 0

    # -- health ----------------------------------------------------------------------------------
    async def probe(self, up: Upstream) -> None:
        if up.healthy and up.outstanding > 0:
            # Answering our requests is proof of life, and a probe would cost a serializing engine a
            # turn (llama.cpp's server by default even cuts the stream in progress for a new request).
            # A dead engine fails those requests (`fail`); a hung one, their timeout.
            return
        if up.ejected and time.monotonic() < up.ejected_until:
            return
        try:
            async with self.client.get(up.url + "/models", headers=self.headers, timeout=PROBE,
                                       allow_redirects=False) as r:
                r.raise_for_status()
                body = b""
                async for chunk in r.content.iter_any():
                    body += chunk
                    if len(body) > MAX_MODELS:
                        raise ValueError(f"a model list over {MAX_MODELS} bytes")
            models = [m["id"] for m in json.loads(body)["data"]]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as e:
            if up.healthy:
                log.warning("upstream %s (%s) taken out: health check failed (%s)", up.name, up.address,
                            type(e).__name__)
            up.healthy = False
            return
        if not up.healthy:
            log.info("upstream %s (%s) is answering: %s", up.name, up.address, ", ".join(models))
        up.models, up.healthy, up.ejected, up.in_a_row = models, True, False, 0

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await asyncio.gather(*(self.probe(u) for u in self.upstreams))

    async def start(self) -> None:
        # No cookie jar: a cookie one engine sets must not ride along on every user's later requests.
        connector = (aiohttp.UnixConnector(path=self.uds, limit=0, keepalive_timeout=KEEPALIVE_S) if self.uds
                     else aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S))
        self.client = aiohttp.ClientSession(
            timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False,
            connector=connector)
        await asyncio.gather(*(self.probe(u) for u in self.upstreams))
        if self.problem:
            log.warning("%s; requests get 503 until one does", self.problem)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.client is not None:
            await self.client.close()
