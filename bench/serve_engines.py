"""The serving engines side by side on the same GGUF (SmolLM2-135M-Instruct, Q8_0), one run:

1. gateway overhead: clients straight to one `llama_cpp.server` vs through `sm70 serve upstream=`
   (keys off, audit on) to that same server: aggregate tokens/s and p50 latency (goal >= 0.95x,
   p50 added <= 10 ms);
2. scale-out: two `llama_cpp.server`s (one thread each) behind the gateway vs one (goal >= 1.7x);
3. the device engine: `sm70 serve model=FILE.gguf` vs `llama_cpp.server` on the same file and
   threads, at 1 and 8 clients (goal >= 1.0x and >= 1.5x), and today's HF engine
   (`sm70 serve model=DIR`, transformers) on the same model, reported.

Every request is a non-streamed completion of the same prompts, temperature 0, `max_tokens`
tokens; tokens are counted from each answer's usage. Loopback only, each server a subprocess.
The last line gives the five ratios.

    .venv/bin/python bench/serve_engines.py [--gguf FILE] [--requests 4] [--max-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from serve_load import PROMPTS, free_port  # noqa: E402  (the same prompts as the batching benchmark)


class Server:
    """A server subprocess, ready once `GET {ready}` answers 200. Its output goes to `log` if given (a
    chatty server must not fill a pipe nobody reads), else stderr is kept for a failed start."""

    def __init__(self, argv: list[str], port: int, label: str, *, log: Path | None = None, env: dict | None = None,
                 start_s: float = 180, ready: str = "/v1/models"):
        self.url, self.label, self.log = f"http://127.0.0.1:{port}", label, log
        out = log.open("wb") if log else None
        self.proc = subprocess.Popen(argv, stdout=out or subprocess.DEVNULL, stderr=out or subprocess.PIPE,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        deadline = time.monotonic() + start_s
        while True:
            if self.proc.poll() is not None:
                said = log.read_text(errors="replace") if log else self.proc.stderr.read().decode()
                raise SystemExit(f"{label} did not start: {said[-1500:]}")
            try:
                if httpx.get(self.url + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{label} did not start in {start_s:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def llama_server(gguf: Path, threads: int) -> Server:
    port = free_port()
    return Server([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "m",
                   "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
                   "--n_ctx", "2048", "--verbose", "false", "--interrupt_requests", "false"], port, "llama_cpp.server")


def sm70_server(tmp: Path, label: str, *args: str, **kw) -> Server:
    """`sm70 serve` with the audit log on; auth=none unless `args` name a keys file."""
    port = free_port()
    auth = [] if any(a.startswith("keys=") for a in args) else ["auth=none"]
    return Server([sys.executable, "-m", "sm70.cli", "serve", f"port={port}", *auth, "log_level=warning",
                   f"audit_log={tmp / f'audit-{port}.log'}", *args], port, label, ready="/health", **kw)


def load(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    """`clients` threads, each sending `requests` completions one after another."""
    latencies, tokens, errors = [], [], []

    def worker(i: int):
        with httpx.Client(timeout=300) as c:
            for j in range(requests):
                body = {"model": "m", "prompt": PROMPTS[(i + j) % len(PROMPTS)], "max_tokens": max_tokens,
                        "temperature": 0}
                t = time.perf_counter()
                r = c.post(url + "/v1/completions", json=body)
                if r.status_code != 200:
                    errors.append(r.status_code)
                    continue
                latencies.append(time.perf_counter() - t)
                tokens.append(r.json()["usage"]["completion_tokens"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"tps": sum(tokens) / wall, "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
            "errors": len(errors), "tokens": sum(tokens)}


def row(label: str, clients: int, r: dict) -> None:
    print(f"| {label} | {clients} | {r['tps']:.1f} | {r['p50_ms']:.0f} | {r['tokens']} | {r['errors']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", help="default: export SmolLM2 to Q8_0 here first")
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    n, k, th = args.requests, args.max_tokens, args.threads
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gguf = Path(args.gguf) if args.gguf else None
        if gguf is None:
            subprocess.run([sys.executable, "-m", "sm70.cli", "export", "gguf", f"model={args.model}",
                            f"out={tmp / 'export'}", "quant=q8_0", "verify=false"], check=True,
                           stdout=subprocess.DEVNULL)
            gguf = tmp / "export" / "model-q8_0.gguf"
        print("| engine | clients | tokens/s | p50 latency (ms) | tokens | errors |\n|---|---|---|---|---|---|")
        a, b = llama_server(gguf, th), llama_server(gguf, th)
        try:
            direct = {c: load(a.url, c, n, k) for c in (1, 8)}
            for c, r in direct.items():
                row("llama_cpp.server, direct", c, r)
            gw1 = sm70_server(tmp, "gateway", f"upstream={a.url}/v1", "health_interval_s=1")
            via = {c: load(gw1.url, c, n, k) for c in (1, 8)}
            for c, r in via.items():
                row("sm70 serve upstream= (1 engine)", c, r)
            gw1.stop()
            gw2 = sm70_server(tmp, "gateway", f"upstream={a.url}/v1,{b.url}/v1", "health_interval_s=1")
            two = load(gw2.url, 8, n, k)
            row("sm70 serve upstream= (2 engines)", 8, two)
            gw2.stop()
        finally:
            a.stop(), b.stop()
        device = sm70_server(tmp, "sm70 serve model=FILE.gguf", f"model={gguf}", f"threads={th}", "served_name=m")
        try:
            ours = {c: load(device.url, c, n, k) for c in (1, 8)}
            for c, r in ours.items():
                row("sm70 serve model=FILE.gguf (llama.cpp in-process)", c, r)
        finally:
            device.stop()
        hf = sm70_server(tmp, "sm70 serve model=DIR", f"model={args.model}", f"threads={th}", "served_name=m")
        try:
            hf8 = load(hf.url, 8, n, k)
            row("sm70 serve model=DIR (transformers, fp32)", 8, hf8)
        finally:
            hf.stop()
    print(f"\nserve_engines: gateway/direct {via[8]['tps'] / direct[8]['tps']:.2f}x at 8 clients "
          f"(p50 +{via[1]['p50_ms'] - direct[1]['p50_ms']:.1f} ms at 1 client); two engines/one "
          f"{two['tps'] / via[8]['tps']:.2f}x; device engine/llama_cpp.server {ours[1]['tps'] / direct[1]['tps']:.2f}x "
          f"at 1 client, {ours[8]['tps'] / direct[8]['tps']:.2f}x at 8; device engine/HF engine at 8 clients "
          f"{ours[8]['tps'] / hf8['tps']:.2f}x")


if __name__ == "__main__":
    main()
