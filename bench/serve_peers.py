"""What `sm70 serve` costs in front of the engines it fronts: llama.cpp's `llama-server` and vLLM's
OpenAI server, each straight and behind `sm70 serve upstream=`, and `sm70 serve model=FILE.gguf` where
this tree runs llama-server itself (else `n/a`). Same model (SmolLM2-135M-Instruct; Q8_0 GGUF for
llama.cpp, the HF folder for vLLM), one engine thread each.

Every request is a streamed chat answer of `--max-tokens` tokens (temperature 0, `ignore_eos`, usage
asked for), after sm70's default system prompt sent by the client, so the engine does the same work
straight or behind the gateway (which adds it only when a request has none). The gateway runs as
deployed: a keys file (the key has an rpm and a tpm, so its tokens are reserved and settled), the
audit log synced before each answer's first byte. Straight and gateway take turns (request by
request at 1 client, run by run at 8, `--reps` runs each) so a neighbour's load on a shared host falls
on both alike; per engine and client count it prints aggregate completion tokens/s and p50 latency,
then the ratios, and last one summary line (goals: gateway >= 0.95x straight at 8 clients, p50 added
<= 10 ms at 1 client).

    .venv/bin/python bench/serve_peers.py [--only llama,vllm,gguf] [--gguf FILE] [--max-tokens 32]
        [--pairs 32] [--rounds 1] [--reps 3] [--llama-server BIN] [--vllm-python BIN]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from serve_engines import Server, sm70_server  # noqa: E402
from serve_load import PROMPTS, free_port, one_request, run_level  # noqa: E402

from sm70.serve.api.serving import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from sm70.serve.main import ServeConfig  # noqa: E402

MODEL = "m"       # the id every server here answers to
PARALLEL = 8      # llama-server's slots (`-np`): the most clients measured


def find_llama_server(given: str | None) -> Path | None:
    for path in (given, ROOT / ".cache/llama-cpp/server-build/bin/llama-server",
                 Path(sys.executable).parent / "llama-server", shutil.which("llama-server")):
        if path and Path(path).is_file():
            return Path(path)
    return None


BESIDE = "llama-server (beside sm70-gguf)"
CACHED = "sm70 serve model=FILE.gguf prompt_cache=true"


def start_llama_server(binary: Path, gguf: Path, log: Path) -> Server:
    port = free_port()
    return Server([str(binary), "-m", str(gguf), "--alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
                   "-np", str(PARALLEL), "-c", str(512 * PARALLEL), "-t", "1", "-tb", "1"], port, "llama-server",
                  log=log)


def sm70_runs_llama_server() -> bool:
    """Whether `sm70 serve model=FILE.gguf` supervises a llama-server here (its settings exist)."""
    return {"slots", "llama_server"} <= set(ServeConfig.model_fields)


class Runs:
    """Each setup's runs at each client count, pooled over the repetitions."""

    def __init__(self, args):
        self.args, self.runs = args, {}
        self.cases = itertools.count()

    def _request(self, client: httpx.Client, url: str, prompt: str) -> tuple[float, float, int]:
        # A question no request before it asked: both engines cache prompt prefixes, and a request that
        # found its whole prompt cached (the same question just asked of the other setup) would be
        # tens of ms faster. So every one finds the system prompt cached and its question new.
        return one_request(client, url, f"{prompt} (case {next(self.cases):04d})", self.args.max_tokens, chat=True,
                           model=MODEL, system=DEFAULT_SYSTEM_PROMPT)

    def paired(self, pairs: list[tuple[str, str, dict]]) -> None:
        """One client: the setups take turns request by request, so that a neighbour's load on a shared
        host falls on each alike (a p50 difference of a few ms is far below that load's swings)."""
        clients = {label: httpx.Client(timeout=300, headers=headers) for label, _, headers in pairs}
        try:
            for i in range(self.args.pairs):
                # A B, then B A: each goes second as often
                for label, url, _ in (pairs if i % 2 == 0 else pairs[::-1]):
                    run = self.runs.setdefault((label, 1), [{"latencies": [], "tokens": 0, "wall": 0.0,
                                                             "requests": 0, "errors": []}])[0]
                    try:
                        latency, _, tokens = self._request(clients[label], url, PROMPTS[i % len(PROMPTS)])
                    except Exception as e:   # counted, reported, and the run goes on
                        run["errors"].append(f"{type(e).__name__}: {e}")
                        run["latencies"].append(None)
                        continue
                    run["latencies"].append(latency)   # in turn order: `added` pairs them up
                    run["tokens"] += tokens
                    run["wall"] += latency
                    run["requests"] += 1
        finally:
            for c in clients.values():
                c.close()

    def concurrent(self, label: str, url: str, headers: dict) -> None:
        r = run_level(url, PARALLEL, self.args.max_tokens, time.monotonic() + 300, rounds=self.args.rounds,
                      headers=headers, chat=True, model=MODEL, system=DEFAULT_SYSTEM_PROMPT)
        self.runs.setdefault((label, PARALLEL), []).append(r)

    def result(self, label: str, clients: int) -> dict | None:
        runs = self.runs.get((label, clients))
        if not runs:
            return None
        latencies = [x for r in runs for x in r["latencies"] if x is not None]
        return {"tps": sum(r["tokens"] for r in runs) / sum(r["wall"] for r in runs),
                "p50_ms": 1000 * statistics.median(latencies), "requests": sum(r["requests"] for r in runs),
                "errors": sum(len(r["errors"]) for r in runs), "first_error": next(
                    (r["errors"][0] for r in runs if r["errors"]), "")}

    def row(self, label: str, clients: int) -> None:
        r = self.result(label, clients)
        print(f"| {label} | {clients} | {r['tps']:.1f} | {r['p50_ms']:.0f} | {r['requests']} | {r['errors']} |"
              + (f" {r['first_error'][:120]}" if r["errors"] else ""), flush=True)

    def alternate(self, pairs: list[tuple[str, str, dict]]) -> None:
        """The setups at 1 client (request by request in turn) and at 8 (run by run in turn, `--reps`
        times); then their rows. One request each first: first-call allocations and caches are not load."""
        for _, url, headers in pairs:
            with httpx.Client(timeout=300, headers=headers) as c:
                self._request(c, url, PROMPTS[0])
        self.paired(pairs)
        for _ in range(self.args.reps):
            for label, url, headers in pairs:
                self.concurrent(label, url, headers)
        for clients in (1, PARALLEL):
            for label, _, _ in pairs:
                self.row(label, clients)

    def ratio(self, over: str, under: str, clients: int) -> float | None:
        a, b = self.result(over, clients), self.result(under, clients)
        return a["tps"] / b["tps"] if a and b and b["tps"] else None

    def added(self, over: str, under: str, clients: int, paired: bool = True) -> float | None:
        """The p50 latency `over` adds to `under`; at 1 client the median of the differences of the
        requests that took turns, which a load that drifts during the run moves less than either p50."""
        a, b = self.result(over, clients), self.result(under, clients)
        if not a or not b:
            return None
        if clients == 1 and paired:
            mine, theirs = self.runs[(over, 1)][0]["latencies"], self.runs[(under, 1)][0]["latencies"]
            return 1000 * statistics.median(x - y for x, y in zip(mine, theirs) if x is not None and y is not None)
        return a["p50_ms"] - b["p50_ms"]


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def gateway(tmp: Path, upstream: str, keys: Path) -> Server:
    return sm70_server(tmp, "gateway", f"upstream={upstream}/v1", f"keys={keys}", "health_interval_s=2",
                       log=tmp / "gateway.log")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="llama,vllm,gguf", help="comma-separated subset of llama, vllm, gguf")
    ap.add_argument("--gguf", help="the Q8_0 GGUF (default: export SmolLM2 to one first)")
    ap.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=32, help="requests per setup at 1 client")
    ap.add_argument("--rounds", type=int, default=1, help="times each of 8 clients goes through the prompts per run")
    ap.add_argument("--reps", type=int, default=3, help="alternations of straight and gateway runs at 8 clients")
    ap.add_argument("--llama-server", help="the llama-server binary (default: .cache/llama-cpp/server-build, "
                                           "beside this Python, PATH)")
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - {"llama", "vllm", "gguf"}:
        ap.error(f"--only: unknown {sorted(only - {'llama', 'vllm', 'gguf'})}")
    binary = find_llama_server(args.llama_server)
    if binary is None and only & {"llama", "gguf"}:
        ap.error("no llama-server binary: pass --llama-server BIN")
    runs, started = Runs(args), time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keys = tmp / "keys.json"
        token = subprocess.run([sys.executable, "-m", "sm70.cli", "keys", "add", "bench", f"keys={keys}", "rpm=100000",
                                "tpm=100000000"], check=True, capture_output=True, text=True).stdout.strip()
        # a new connection for every request, straight or not: llama-server closes a connection a moment
        # after each stream, and a client that reused it would count errors that are the client's
        close = {"Connection": "close"}
        auth = {"Authorization": f"Bearer {token}", **close}
        gguf = Path(args.gguf) if args.gguf else None
        if gguf is None and only & {"llama", "gguf"}:
            subprocess.run([sys.executable, "-m", "sm70.cli", "export", "gguf", f"model={args.model}",
                            f"out={tmp / 'export'}", "quant=q8_0", "verify=false"], check=True,
                           stdout=subprocess.DEVNULL)
            gguf = tmp / "export" / "model-q8_0.gguf"
        print(f"streamed chat, {args.max_tokens} tokens, ignore_eos; 1 client: {args.pairs} requests per setup, "
              f"the setups in turn; 8 clients: {len(PROMPTS) * args.rounds} requests each, {args.reps} runs per setup "
              f"in turn; engines on one thread\n"
              f"| setup | clients | tokens/s | p50 latency (ms) | requests | errors |\n|---|---|---|---|---|---|",
              flush=True)
        if "llama" in only:
            engine = start_llama_server(binary, gguf, tmp / "llama-server.log")
            try:
                gw = gateway(tmp, engine.url, keys)
                try:
                    runs.alternate([("llama-server", engine.url, close), ("sm70 upstream= -> llama-server", gw.url,
                                                                         auth)])
                finally:
                    gw.stop()
            finally:
                engine.stop()
        if "vllm" in only:
            port = free_port()
            env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "VLLM_NO_USAGE_STATS": "1"}
            # vLLM's defaults: the model's bfloat16, graphs compiled (a start of a minute or two; eager
            # float32 decodes at about half the speed here)
            engine = Server([args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model,
                             "--served-model-name", MODEL, "--max-model-len", "2048", "--host", "127.0.0.1", "--port",
                             str(port)], port, "vLLM", log=tmp / "vllm.log", env=env, start_s=600)
            try:
                gw = gateway(tmp, engine.url, keys)
                try:
                    runs.alternate([("vLLM", engine.url, close), ("sm70 upstream= -> vLLM", gw.url, auth)])
                finally:
                    gw.stop()
            finally:
                engine.stop()
        if "gguf" in only and sm70_runs_llama_server():
            # llama-server straight again, in turn with sm70's own child: as deployed (prompt cache off
            # across users) and with prompt_cache=true (what the straight server does by default)
            engine = start_llama_server(binary, gguf, tmp / "llama-server-2.log")
            common = [f"model={gguf}", f"keys={keys}", "threads=1", f"slots={PARALLEL}", f"llama_server={binary}",
                      f"served_name={MODEL}"]
            ours = sm70_server(tmp, "sm70 serve model=FILE.gguf", *common, log=tmp / "sm70-gguf.log")
            cached = sm70_server(tmp, "sm70 serve model=FILE.gguf prompt_cache=true", *common, "prompt_cache=true",
                                 log=tmp / "sm70-gguf-cached.log")
            try:
                runs.alternate([(BESIDE, engine.url, close), ("sm70 serve model=FILE.gguf", ours.url, auth),
                                (CACHED, cached.url, auth)])
            finally:
                ours.stop(), cached.stop(), engine.stop()
        elif "gguf" in only:
            print("| sm70 serve model=FILE.gguf | - | n/a: this tree runs GGUFs in-process, not with llama-server |")
    llama, vllm, gw_l, gw_v, ours = ("llama-server", "vLLM", "sm70 upstream= -> llama-server",
                                     "sm70 upstream= -> vLLM", "sm70 serve model=FILE.gguf")
    print()
    for name, over, under in (("llama-server", gw_l, llama), ("vLLM", gw_v, vllm)):
        print(f"gateway/{name}: 1c {fmt(runs.ratio(over, under, 1), '.2f')}, 8c "
              f"{fmt(runs.ratio(over, under, 8), '.2f')}; p50 added 1c {fmt(runs.added(over, under, 1), '.1f')} ms "
              f"(median of the paired differences; of the p50s {fmt(runs.added(over, under, 1, paired=False), '.1f')}"
              f" ms), 8c {fmt(runs.added(over, under, 8), '.1f')} ms")
    print(f"sm70-gguf/llama-server: 1c {fmt(runs.ratio(ours, BESIDE, 1), '.2f')}, 8c "
          f"{fmt(runs.ratio(ours, BESIDE, 8), '.2f')}; with prompt_cache=true 1c {fmt(runs.ratio(CACHED, BESIDE, 1), '.2f')}"
          f", 8c {fmt(runs.ratio(CACHED, BESIDE, 8), '.2f')}; total {time.monotonic() - started:.0f} s")
    print(f"serve_peers: gateway/llama-server 8c {fmt(runs.ratio(gw_l, llama, 8), '.2f')} (goal 0.95), gateway/vllm 8c "
          f"{fmt(runs.ratio(gw_v, vllm, 8), '.2f')} (goal 0.95), p50 added 1c "
          f"{fmt(runs.added(gw_l, llama, 1), '.1f')}/{fmt(runs.added(gw_v, vllm, 1), '.1f')} ms (llama-server/vllm, "
          f"goal 10), sm70-gguf/llama-server 1c {fmt(runs.ratio(ours, BESIDE, 1), '.2f')} 8c "
          f"{fmt(runs.ratio(ours, BESIDE, 8), '.2f')} (goal 0.95; prompt_cache=true {fmt(runs.ratio(CACHED, BESIDE, 1), '.2f')}"
          f"/{fmt(runs.ratio(CACHED, BESIDE, 8), '.2f')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
