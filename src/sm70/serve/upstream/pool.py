"""The upstream engines and how a request picks one: least outstanding requests among the healthy.

An engine is taken out the moment a request to it fails at the transport level or with a 5xx, and
brought back by the health loop once `GET {url}/models` answers again; the same probe learns which
model ids it serves. The engines' own credential (`upstream_key`) goes only to them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from sm70.errors import Sm70Error

log = logging.getLogger("sm70.serve")


@dataclass
class Upstream:
    url: str                        # the OpenAI base, e.g. http://10.0.0.5:8000/v1
    name: str                       # host:port, for logs, audit lines and metrics
    healthy: bool = False
    outstanding: int = 0
    models: list[str] = field(default_factory=list)
    served: int = 0
    failures: int = 0

    @classmethod
    def parse(cls, url: str) -> "Upstream":
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Sm70Error(f"upstream: {url!r} is not an http(s) URL such as http://127.0.0.1:8001/v1")
        if parts.username or parts.password:
            raise Sm70Error(f"upstream: {parts.hostname}: put the engine's credential in upstream_key=FILE, "
                            f"not in the URL (it would be logged)")
        return cls(url=url.strip().rstrip("/"), name=parts.netloc)


class Pool:
    def __init__(self, urls: list[str], key: str | None, *, timeout_s: float, health_interval_s: float):
        self.upstreams = [Upstream.parse(u) for u in urls]
        if not self.upstreams:
            raise Sm70Error("upstream: no URL given")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self.health_interval_s = health_interval_s
        self.client: httpx.AsyncClient | None = None
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

    def fail(self, up: Upstream, why: str) -> None:
        up.failures += 1
        if up.healthy:
            log.warning("upstream %s taken out: %s", up.name, why)
        up.healthy = False

    # -- health ----------------------------------------------------------------------------------
    async def probe(self, up: Upstream) -> None:
        if up.healthy and up.outstanding > 0:
            # Answering our requests is proof of life, and a probe would cost a serializing engine a
            # turn (llama.cpp's server by default even cuts the stream in progress for a new request).
            # A dead engine fails those requests (`fail`); a hung one, their timeout.
            return
        try:
            r = await self.client.get(up.url + "/models", headers=self.headers, timeout=2.0)
            r.raise_for_status()
            models = [m["id"] for m in r.json()["data"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            if up.healthy:
                log.warning("upstream %s taken out: health check failed (%s)", up.name, type(e).__name__)
            up.healthy = False
            return
        if not up.healthy:
            log.info("upstream %s is answering: %s", up.name, ", ".join(models))
        up.models, up.healthy = models, True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await asyncio.gather(*(self.probe(u) for u in self.upstreams))

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=None,
                                                                                   max_keepalive_connections=64))
        await asyncio.gather(*(self.probe(u) for u in self.upstreams))
        if self.problem:
            log.warning("%s; requests get 503 until one does", self.problem)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.client is not None:
            await self.client.aclose()
