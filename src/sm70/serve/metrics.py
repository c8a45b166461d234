"""`GET /metrics`: Prometheus text format, behind a key like every other API route.

Counts requests by route and status, a latency histogram, tokens in and out, the engine's queue and,
in upstream mode, each engine's health and requests in flight. No label ever holds text a client
chose (a path is its route or `other`), a key name or a prompt: an operator's dashboard may be
seen by more people than the audit log.
"""

from __future__ import annotations

import threading
from collections import Counter

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/ready", "/metrics", "/health", "/")


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()          # (route, status)
        self.buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.rate_limited = 0

    def observe(self, path: str, status: int | None, seconds: float, prompt_tokens: int,
                completion_tokens: int) -> None:
        route = path if path in ROUTES else "static" if path.startswith("/static/") else "other"
        with self._lock:
            self.requests[(route, str(status or 0))] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    self.buckets[i] += 1
            self.tokens_in += prompt_tokens
            self.tokens_out += completion_tokens
            self.rate_limited += status == 429

    def render(self, snapshot: dict) -> str:
        out = ["# HELP sm70_requests_total Requests answered, by route and HTTP status.",
               "# TYPE sm70_requests_total counter"]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'sm70_requests_total{{route="{route}",status="{status}"}} {n}')
            out += ["# HELP sm70_request_seconds Time from a request's arrival to its last byte.",
                    "# TYPE sm70_request_seconds histogram"]
            out += [f'sm70_request_seconds_bucket{{le="{edge}"}} {n}' for edge, n in zip(BUCKETS, self.buckets)]
            out += [f'sm70_request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                    f"sm70_request_seconds_sum {self.latency_sum:.6f}",
                    f"sm70_request_seconds_count {self.latency_count}",
                    "# TYPE sm70_prompt_tokens_total counter", f"sm70_prompt_tokens_total {self.tokens_in}",
                    "# TYPE sm70_completion_tokens_total counter", f"sm70_completion_tokens_total {self.tokens_out}"]
        queue = snapshot.get("waiting", snapshot.get("outstanding", snapshot.get("in_flight", 0)))
        out += ["# HELP sm70_queue_length Requests waiting (embedded) or in flight at the engines (upstream).",
                "# TYPE sm70_queue_length gauge", f"sm70_queue_length {queue}"]
        if "running" in snapshot:
            out += ["# TYPE sm70_running gauge", f"sm70_running {snapshot['running']}"]
        ups = snapshot.get("upstreams", [])
        if ups:
            out += ["# HELP sm70_upstream_healthy 1 while the engine answers its health check.",
                    "# TYPE sm70_upstream_healthy gauge"]
            out += [f'sm70_upstream_healthy{{upstream="{u["name"]}"}} {int(u["healthy"])}' for u in ups]
            out += ["# TYPE sm70_upstream_outstanding gauge"]
            out += [f'sm70_upstream_outstanding{{upstream="{u["name"]}"}} {u["outstanding"]}' for u in ups]
            out += ["# TYPE sm70_upstream_failures_total counter"]
            out += [f'sm70_upstream_failures_total{{upstream="{u["name"]}"}} {u["failures"]}' for u in ups]
        return "\n".join(out) + "\n"
