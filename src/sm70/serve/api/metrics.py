"""`GET /metrics`: Prometheus text format from `prometheus_client`, behind a key like every other API route.

Counts requests by route and status, a latency histogram, tokens in and out, the engine's queue and,
in upstream mode, each engine's health and requests in flight; with them the client library's
process and Python metrics (memory, CPU, open files, GC). No label ever holds text a client chose
(a path is its route or `other`), a key name or a prompt: an operator's dashboard may be seen by
more people than the audit log. Each app has its own registry, so two servers in one process (the
tests) keep apart.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import (CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/ready", "/metrics", "/health", "/")
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class EngineCollector:
    """The engine's state, read from its snapshot when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        snap = self.snapshot()
        queue = snap.get("waiting", snap.get("outstanding", snap.get("in_flight", 0)))
        yield GaugeMetricFamily("sm70_queue_length", "Requests waiting (embedded) or in flight at the engines "
                                "(upstream).", value=queue)
        if "running" in snap:
            yield GaugeMetricFamily("sm70_running", "Sequences in the running batch.", value=snap["running"])
        ups = snap.get("upstreams", [])
        if ups:
            healthy = GaugeMetricFamily("sm70_upstream_healthy", "1 while the engine answers its health check.",
                                        labels=["upstream"])
            outstanding = GaugeMetricFamily("sm70_upstream_outstanding", "Requests in flight at the engine.",
                                            labels=["upstream"])
            failures = CounterMetricFamily("sm70_upstream_failures", "Requests the engine failed.",
                                           labels=["upstream"])
            for u in ups:
                healthy.add_metric([u["name"]], int(u["healthy"]))
                outstanding.add_metric([u["name"]], u["outstanding"])
                failures.add_metric([u["name"]], u["failures"])
            yield from (healthy, outstanding, failures)


class Metrics:
    def __init__(self, snapshot: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.requests = Counter("sm70_requests", "Requests answered, by route and HTTP status.", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("sm70_request_seconds", "Time from a request's arrival to its last byte.",
                                 buckets=BUCKETS, registry=self.registry)
        self.tokens_in = Counter("sm70_prompt_tokens", "Prompt tokens of the requests answered.",
                                 registry=self.registry)
        self.tokens_out = Counter("sm70_completion_tokens", "Completion tokens of the requests answered.",
                                  registry=self.registry)
        self.registry.register(EngineCollector(snapshot))
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)

    def observe(self, path: str, status: int | None, seconds: float, prompt_tokens: int,
                completion_tokens: int) -> None:
        route = path if path in ROUTES else "static" if path.startswith("/static/") else "other"
        self.requests.labels(route, str(status or 0)).inc()
        self.latency.observe(seconds)
        self.tokens_in.inc(prompt_tokens)
        self.tokens_out.inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
