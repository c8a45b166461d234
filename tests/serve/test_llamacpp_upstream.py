"""`sm70 serve upstream=...` in front of two real llama.cpp servers (`llama-server`, started directly, as a
hospital runs its own engines) serving the SmolLM2 GGUF, with the official OpenAI client:
answers streamed and not, the engines' own key kept on the gateway, one engine SIGKILLed under a
bounded load of 8 clients x 6 requests, brought back and used again."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from sm70.cli import main

from .conftest import free_port, start_gateway
from .test_upstream import open_streams

openai = pytest.importorskip("openai")

ENGINE_KEY = "engine-secret-held-by-the-gateway"
CHAT = [{"role": "user", "content": "What is the first-line treatment for anaphylaxis?"}]


class LlamaServer:
    """llama.cpp's own server in its own process (one thread, one slot), so a test can SIGKILL it."""

    def __init__(self, binary: Path, gguf: Path, port: int):
        self.binary, self.gguf, self.port, self.url = binary, gguf, port, f"http://127.0.0.1:{port}"
        self.argv = [str(binary), "--model", str(gguf), "--alias", "smollm2", "--host", "127.0.0.1",
                     "--port", str(port), "--threads", "1", "--threads-batch", "1", "--ctx-size", "2048",
                     "--parallel", "1", "--api-key", ENGINE_KEY, "--no-webui", "--log-verbosity", "1"]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self, timeout: float = 60) -> "LlamaServer":
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(self.url + "/v1/models", timeout=1,
                             headers={"Authorization": f"Bearer {ENGINE_KEY}"}).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama-server did not start"
            time.sleep(0.2)

    def restart(self) -> "LlamaServer":
        self.__init__(self.binary, self.gguf, self.port)
        return self.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(smollm2_gguf, llama_server_binary, keys, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llama-cluster")
    (tmp / "upstream.key").write_text(ENGINE_KEY + "\n")
    engines = [LlamaServer(llama_server_binary, smollm2_gguf / "model-q8_0.gguf", free_port()) for _ in range(2)]
    try:
        for e in engines:
            e.wait()
        gateway = start_gateway(tmp, [e.url + "/v1" for e in engines], keys=str(keys["file"]),
                                upstream_key=str(tmp / "upstream.key"))
        gateway.key, gateway.engines = keys["alice"], engines
        yield gateway
        gateway.stop()
    finally:
        for e in engines:
            e.kill()


def client(gateway, **kw):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, **kw)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def upstreams(gateway) -> list[dict]:
    return httpx.get(gateway.url + "/ready", headers={"Authorization": f"Bearer {gateway.key}"}).json()["stats"][
        "upstreams"]


def test_chat_through_the_gateway_to_llama_cpp(cluster):
    c = client(cluster)
    assert [m.id for m in c.models.list().data] == ["smollm2"]
    r = c.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    assert text and "<|im_" not in text and r.choices[0].finish_reason in ("stop", "length")
    assert "not a certified medical device" in r.model_extra["disclaimer"]
    chunks = list(c.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0,
                                            stream=True))
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 1   # passed through
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    # without the gateway a client has nothing: the engine wants its own key, which only the gateway holds
    direct = httpx.post(cluster.engines[0].url + "/v1/chat/completions", headers={"Authorization": f"Bearer {cluster.key}"},
                        json={"messages": CHAT, "max_tokens": 2})
    assert direct.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=cluster.url + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="smollm2", messages=CHAT, max_tokens=2)


def test_sigkill_one_llama_cpp_server_under_load(cluster):
    n_before = len(lines(cluster.audit_log))
    victim, survivor = cluster.engines
    results: list[tuple[bool, str]] = []       # (stream, "ok" | "http <status>" | "stream error")
    started = threading.Barrier(9)

    def worker(i: int):
        c = client(cluster, timeout=120)
        started.wait()
        for j in range(6):
            stream = (i + j) % 2 == 0
            try:
                if stream:
                    chunks = list(c.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24,
                                                            temperature=0, stream=True))
                    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
                else:
                    r = c.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0)
                    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
                results.append((stream, "ok"))
            except openai.APIStatusError as e:
                assert e.status_code in (502, 503), e
                results.append((stream, f"http {e.status_code}"))
            except openai.APIError as e:   # an SSE error event mid-stream
                assert "incomplete" in str(e.message), e
                results.append((stream, "stream error"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait()
    deadline = time.monotonic() + 60
    while not open_streams(cluster, n_before, "engine-1"):   # kill it mid-answer
        assert time.monotonic() < deadline, "no stream reached the victim"
        time.sleep(0.01)
    victim.kill()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 48, results
    assert sum(r == "ok" for _, r in results) >= 24, results
    assert all(r == "ok" for stream, r in results if not stream), results   # retried on the survivor
    assert [u["healthy"] for u in upstreams(cluster)] == [False, True]

    new = lines(cluster.audit_log)[n_before:]
    by_request = defaultdict(list)
    for e in new:
        by_request[e["request"]].append(e)
    assert len(by_request) == 48
    assert sum(e["outcome"] == "upstream_error" for e in new) == sum(r == "stream error" for _, r in results)
    assert main(["audit", "verify", str(cluster.audit_log)]) == 0

    # new requests go to the live engine; restarted, the other is found healthy and used again
    served = {u["name"]: u["served"] for u in upstreams(cluster)}
    client(cluster).chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)
    assert {u["name"]: u["served"] for u in upstreams(cluster)}["engine-2"] == \
        served["engine-2"] + 1
    victim.restart()
    deadline = time.monotonic() + 30
    while not all(u["healthy"] for u in upstreams(cluster)):
        assert time.monotonic() < deadline, upstreams(cluster)
        time.sleep(0.2)
    for _ in range(4):
        client(cluster).chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)
    assert {u["name"]: u["served"] for u in upstreams(cluster)}["engine-1"] > \
        served["engine-1"]
