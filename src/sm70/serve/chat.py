"""`sm70 chat model=DIR` (or model=FILE.gguf, run by llama-server) or `sm70 chat url=http://127.0.0.1:8000 key=...`:
a streaming terminal chat.

One line of input is one user turn (so it can be piped: `echo question | sm70 chat ...`);
`/reset` clears the conversation, `/exit` or end of input leaves. The key may also come from
SM70_API_KEY, which keeps it out of the process list.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.serve.api.serving import DEFAULT_DISCLAIMER, DEFAULT_SYSTEM_PROMPT


class ChatConfig(Config):
    model: Path | None = None
    adapter: Path | None = None
    quant: Literal["none", "nf4"] = "none"
    url: str | None = None
    key: str | None = None
    served_model: str | None = Field(None, description="model id on the server (default: its first)")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    seed: int | None = None


def chat(cfg: ChatConfig) -> int:
    if (cfg.model is None) == (cfg.url is None):
        raise Sm70Error("give exactly one of model=DIR (run the model here) or url=http://HOST:PORT (a server)")
    with contextlib.ExitStack() as stack:
        if cfg.url:
            reply = _remote(cfg)
        elif str(cfg.model).endswith(".gguf"):
            reply = _gguf(cfg, stack)
        else:
            reply = _local(cfg)
        return _loop(reply)


def _loop(reply) -> int:
    interactive = sys.stdin.isatty()
    print(f"[{DEFAULT_DISCLAIMER}]", file=sys.stderr)
    messages: list[dict] = []
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            messages.clear()
            continue
        messages.append({"role": "user", "content": text})
        parts = []
        for delta in reply(messages):
            parts.append(delta)
            print(delta, end="", flush=True)
        print(flush=True)
        messages.append({"role": "assistant", "content": "".join(parts)})


def _body(cfg: ChatConfig, messages: list[dict]) -> dict:
    body = {"messages": messages, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "stream": True}
    return body if cfg.seed is None else {**body, "seed": cfg.seed}


def _stream(client, url: str, body: dict, where: str) -> Iterator[str]:
    """The text deltas of one streamed chat answer from an OpenAI-compatible server."""
    import httpx

    sources: list[dict] = []
    try:
        with client.stream("POST", url, json=body, timeout=httpx.Timeout(600, connect=10)) as res:
            if res.status_code != 200:
                res.read()
                raise Sm70Error(f"{where} answered {res.status_code}: {_message(res)}")
            for line in res.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise Sm70Error(f"{where}: {event['error']['message']}")
                content = event["choices"][0]["delta"].get("content") if event["choices"] else None
                if content:
                    yield content
                sources.extend(event.get("citations") or ())
    except httpx.HTTPError as e:
        raise Sm70Error(f"{where}: cannot talk to it: {e}") from None
    if sources:
        # after the answer, not in it: the sources stay out of the conversation sent back next turn
        print("\n" + format_sources(sources), end="", flush=True)


def format_sources(citations: list[dict]) -> str:
    """A server with rag= cites its sources in the stream's last chunk: one line each, as a clinician
    would look them up (document, title, page or section)."""
    lines = ["Sources:"]
    for c in citations:
        where = f", {c['location']}" if c.get("location") else ""
        title = f" — {c['title']}" if c.get("title") else ""
        lines.append(f"  [{c.get('n')}] {c.get('document')}{title}{where}")
    return "\n".join(lines)


def _remote(cfg: ChatConfig):
    import httpx

    key = cfg.key or os.environ.get("SM70_API_KEY")
    client = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {})
    base = cfg.url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]

    def reply(messages: list[dict]) -> Iterator[str]:
        body = _body(cfg, messages)
        if cfg.served_model:
            body["model"] = cfg.served_model
        return _stream(client, f"{base}/v1/chat/completions", body, f"url: {base}")

    return reply


def _gguf(cfg: ChatConfig, stack: contextlib.ExitStack):
    """A GGUF (an export for a device) runs in llama-server, as `sm70 serve` runs it; one user, so its
    prompt cache is on (each turn re-reads only what is new)."""
    from sm70.serve.engines.llama_server import LlamaServer
    from sm70.serve.engines.registry import EngineSpec

    child = LlamaServer(EngineSpec(model=Path(cfg.model), adapter=cfg.adapter, quant=cfg.quant, slots=1,
                                   prompt_cache=True))
    stack.callback(child.close)
    client = stack.enter_context(child.client())
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []

    def reply(messages: list[dict]) -> Iterator[str]:
        return _stream(client, f"{child.url}/chat/completions", _body(cfg, system + messages), "llama-server")

    return reply


def _message(res) -> str:
    try:
        return res.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return res.text[:200]


def _local(cfg: ChatConfig):
    from sm70.serve.engines.registry import EngineSpec, open_engine
    from sm70.serve.guard.audit import AuditRecord
    from sm70.serve.api.protocol import ChatRequest
    from sm70.serve.api.serving import HTTPError, Service

    engine = open_engine("transformers", EngineSpec(model=Path(cfg.model), adapter=cfg.adapter, quant=cfg.quant,
                                                    max_batch=1))
    service = Service(engine, system_prompt=cfg.system_prompt)

    def reply(messages: list[dict]) -> Iterator[str]:
        try:
            # no event loop here: prepared and submitted in this thread, events read synchronously
            record = AuditRecord()
            ids, params, model, _ = service.prepare(ChatRequest(**_body(cfg, messages)), record)
            handle = service.submit(ids, params, model, record)
        except HTTPError as e:
            raise Sm70Error(e.message) from None
        for event in handle.events_sync():
            if event.kind == "delta":
                yield event.text
            elif event.kind == "error":
                raise Sm70Error(f"model: {event.text}")

    return reply
