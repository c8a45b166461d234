"""Scale-out and the transformers engine, side by side on the same model (SmolLM2-135M-Instruct), one run:

1. scale-out: two llama.cpp `llama-server`s (one thread each, the Q8_0 GGUF) behind one `sm70 serve
   upstream=` vs one of them behind it, at 8 clients (goal >= 1.7x);
2. `sm70 serve model=DIR` (the transformers engine, fp32) on the same model at 8 clients, beside the
   gateway in front of one llama-server, reported.

What the gateway costs in front of one engine, and `sm70 serve model=FILE.gguf` against llama-server
itself, are bench/serve_peers.py's. Every request is a non-streamed completion of the same prompts,
temperature 0, `max_tokens` tokens; tokens are counted from each answer's usage. Loopback only, each
server a subprocess. The last line gives the ratios.

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


def llama_server(gguf: Path, threads: int, slots: int = 8) -> Server:
    """llama.cpp's own server (`make device` installs it beside the venv's python)."""
    port = free_port()
    binary = Path(sys.executable).parent / "llama-server"
    return Server([str(binary), "-m", str(gguf), "--alias", "m", "--host", "127.0.0.1", "--port", str(port),
                   "-t", str(threads), "-tb", str(threads), "-np", str(slots), "-c", str(512 * slots),
                   "--no-webui"], port, "llama-server", ready="/health")


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
            gw1 = sm70_server(tmp, "gateway", f"upstream={a.url}/v1", "health_interval_s=1")
            one = load(gw1.url, 8, n, k)
            row("sm70 serve upstream= (1 llama-server)", 8, one)
            gw1.stop()
            gw2 = sm70_server(tmp, "gateway", f"upstream={a.url}/v1,{b.url}/v1", "health_interval_s=1")
            two = load(gw2.url, 8, n, k)
            row("sm70 serve upstream= (2 llama-servers)", 8, two)
            gw2.stop()
        finally:
            a.stop(), b.stop()
        hf = sm70_server(tmp, "sm70 serve model=DIR", f"model={args.model}", f"threads={th}", "served_name=m")
        try:
            hf8 = load(hf.url, 8, n, k)
            row("sm70 serve model=DIR (transformers, fp32)", 8, hf8)
        finally:
            hf.stop()
    print(f"\nserve_engines: two llama-servers/one behind the gateway {two['tps'] / one['tps']:.2f}x at 8 clients "
          f"(goal 1.7); transformers engine/one llama-server {hf8['tps'] / one['tps']:.2f}x at 8 clients")


if __name__ == "__main__":
    main()
