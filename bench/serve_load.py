"""Benchmark `sm70 serve` under concurrent load: does batching turn more clients into more tokens/s?

The tiny model (`sm70 model tiny`) runs behind `sm70 serve` in a subprocess on a free loopback
port. At 1, 4 and 8 concurrent clients, every client streams the same fixed prompts with
max_tokens=32, temperature 0 and `ignore_eos` (so every answer is exactly 32 tokens). Per level it
prints requests/s, generated tokens/s, p50/p99 latency, p50 time to first token and errors; the
last line is aggregate tokens/s at 8 clients over 1 client (goal: >= 4 with 0 errors).

    .venv/bin/python bench/serve_load.py [--shape bench|tiny] [--max-tokens 32] [--threads 1] [--timeout 300]

`--shape bench` (the default) builds the tiny model at the shape the training and evaluation benchmarks
use (hidden 512, 8 layers, intermediate 1408, vocab 4000); `--shape tiny` keeps the test model's
defaults (hidden 128, 2 layers), where a decoding step costs less than the HTTP work around it, so
that figure measures Python overhead more than batching.

Loopback only, a fixed number of requests, an overall deadline. The figure is noisy on a shared
machine (other processes take CPU from the server and from the clients alike).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = [
    "A 45-year-old man presents with crushing chest pain radiating to the left arm. Next step?",
    "List the diagnostic criteria for sepsis.",
    "What is the first-line treatment for anaphylaxis in adults?",
    "Explain the mechanism of action of metformin.",
]
LEVELS = (1, 4, 8)
SHAPES = {
    "bench": ["hidden_size=512", "num_layers=8", "intermediate_size=1408", "vocab_size=4000"],
    "tiny": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(client: httpx.Client, url: str, prompt: str, max_tokens: int, *, chat: bool = False,
                model: str | None = None, system: str | None = None) -> tuple[float, float, int]:
    """(latency s, time to first token s, completion tokens) for one streamed completion, or with `chat`
    one streamed chat answer (after the `system` message, if given)."""
    body = {"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, **({"model": model} if model else {})}
    if chat:
        body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    start = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", url + ("/v1/chat/completions" if chat else "/v1/completions"), json=body) as res:
        res.raise_for_status()
        for line in res.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            choice = event["choices"][0] if event.get("choices") else {}
            if first is None and (choice.get("delta", {}).get("content") if chat else choice.get("text")):
                first = time.perf_counter() - start
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    latency = time.perf_counter() - start
    return latency, first if first is not None else latency, tokens


def run_level(url: str, clients: int, max_tokens: int, deadline: float, rounds: int = 1, headers: dict | None = None,
              **request) -> dict:
    """`clients` threads, each streaming the prompts `rounds` times one after another (`request`: the
    rest of `one_request`'s arguments)."""
    results: list[tuple[float, float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop():
        with httpx.Client(timeout=max(5.0, deadline - time.monotonic()), headers=headers) as client:
            for prompt in PROMPTS * rounds:
                if time.monotonic() > deadline:
                    with lock:
                        errors.append("deadline")
                    return
                try:
                    r = one_request(client, url, prompt, max_tokens, **request)
                    with lock:
                        results.append(r)
                except Exception as e:  # counted, reported, and the level goes on
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(r[0] for r in results) or [float("nan")]
    ttft = sorted(r[1] for r in results) or [float("nan")]
    tokens = sum(r[2] for r in results)
    return {"clients": clients, "requests": len(results), "wall": wall, "rps": len(results) / wall,
            "tps": tokens / wall, "p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "ttft": statistics.median(ttft), "errors": errors, "latencies": lat, "tokens": tokens}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bench")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in the server")
    ap.add_argument("--timeout", type=float, default=300, help="overall deadline in seconds")
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    sm70 = [sys.executable, "-m", "sm70.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        subprocess.run(sm70 + ["model", "tiny", str(model), *SHAPES[args.shape]], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(sm70 + ["serve", f"model={model}", "host=127.0.0.1", f"port={port}", "auth=none",
                                          f"audit_log={Path(tmp) / 'audit.log'}", f"threads={args.threads}",
                                          "max_batch=8", "log_level=warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                if server.poll() is not None:
                    print(server.stderr.read().decode()[-2000:], file=sys.stderr)
                    return 1
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    print("serve_load: the server did not start in time", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            with httpx.Client(timeout=60) as c:   # warm-up: first-call allocations are not load
                one_request(c, url, PROMPTS[0], args.max_tokens)
            print(f"tiny model, {args.shape} shape, behind `sm70 serve` (threads={args.threads}, max_batch=8); "
                  f"{len(PROMPTS)} prompts "
                  f"per client, max_tokens={args.max_tokens}, streamed, ignore_eos")
            levels = {}
            for clients in LEVELS:
                r = levels[clients] = run_level(url, clients, args.max_tokens, deadline)
                print(f"clients={clients:<2} requests={r['requests']:<3} req/s={r['rps']:6.2f} "
                      f"tokens/s={r['tps']:8.1f} p50={r['p50']:.3f}s p99={r['p99']:.3f}s "
                      f"ttft_p50={r['ttft']:.3f}s errors={len(r['errors'])}")
                for e in r["errors"][:3]:
                    print(f"  error: {e}")
            stats = httpx.get(url + "/ready", timeout=10).json()["stats"]
            print(f"engine: max batch seen {stats['max_batch_seen']}, steps by batch size {stats['batch_sizes']}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    errors = sum(len(r["errors"]) for r in levels.values())
    ratio = levels[8]["tps"] / levels[1]["tps"] if levels[1]["tps"] else float("nan")
    print(f"serve_load ({args.shape} shape): tokens/s at 8 clients / 1 client = {ratio:.2f}x (goal >= 4), "
          f"errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
