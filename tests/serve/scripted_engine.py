"""An OpenAI-style engine on loopback whose every answer the test decides: what a real engine does
only by chance or when broken (cut a stream, close the connection, send too much, echo a key, set a
cookie) it does on cue, so the gateway's handling of it is tested deterministically.

The user's last message names the script:
- `whole`: a streamed or whole answer that ends with a finish_reason (and `[DONE]` when streamed); a
  streamed one carries no `usage`, a whole one 7 prompt and 5 completion tokens;
- `held`: `whole`, once the test calls `.release()` (requests in flight for as long as a test needs);
- `cut`: `[DONE]` before any finish_reason (what llama.cpp's Python server does to an answer in
  progress when another request arrives); `hangup`: the connection closed without `[DONE]`;
- `huge-body`: a whole answer larger than the gateway's cap; `long-line`: one stream line over it;
- `bad-usage`: a whole answer whose `usage` holds no counts;
- `refuse`: 401 with a body that echoes the credential it was sent;
- `fail`: HTTP 500;
- `cookie`: a whole answer that sets a cookie;
- any other message (a question): `whole`.
Every request's headers and body are kept in `.seen` for the test to read.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "scripted"
WORDS = ["Intramuscular", " epinephrine", " 0.5", " mg", " now."]
HUGE = 3 << 20    # bytes of an oversized body or line: over the caps the tests set
SCRIPTS = {"whole", "held", "cut", "hangup", "huge-body", "long-line", "bad-usage", "refuse", "fail", "cookie"}


def _chunk(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": MODEL,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _answer(text: str, use) -> bytes:
    return json.dumps({"id": "chatcmpl-scripted", "object": "chat.completion", "model": MODEL,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}], "usage": use}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:   # quiet: the test reads the gateway's audit, not this
        pass

    def _send(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")   # no kept-alive connection outlives `stop()`
        self.close_connection = True
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        script = body["messages"][-1]["content"].strip()
        script = script if script in SCRIPTS else "whole"
        self.server.seen.append({"script": script, "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "body": body})
        use = {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 7 + len(WORDS)}
        if script == "held":
            self.server.released.wait(timeout=60)
            script = "whole"
        if script == "refuse":
            return self._send(401, json.dumps({"error": {"message": f"bad key {self.headers['authorization']}"}})
                              .encode())
        if script == "fail":
            return self._send(500, b'{"error": {"message": "engine on fire"}}')
        if not body.get("stream"):
            if script == "huge-body":
                return self._send(200, _answer("x" * HUGE, use))
            if script == "bad-usage":
                return self._send(200, _answer("".join(WORDS), {"prompt_tokens": -5, "completion_tokens": "many"}))
            if script == "cookie":
                return self._send(200, _answer("".join(WORDS), use), ("set-cookie", "engine_session=abc; Path=/"))
            return self._send(200, _answer("".join(WORDS), use))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        events = [_chunk(w, None) for w in WORDS]
        if script == "whole":
            events += [_chunk(None, "stop"), b"data: [DONE]\n\n"]
        elif script == "cut":
            events += [b"data: [DONE]\n\n"]
        elif script == "long-line":
            events += [b"data: " + b"x" * HUGE + b"\n\n"]
        for e in events:
            self.wfile.write(e)
            self.wfile.flush()
        self.close_connection = True


class ScriptedEngine:
    """`ScriptedEngine()` serves on 127.0.0.1 at `.url` (OpenAI base URL: `.url + "/v1"`) until `.stop()`."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        self.server.released = threading.Event()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[dict]:
        return self.server.seen

    @property
    def requests(self) -> list[str]:
        return [s["script"] for s in self.server.seen]

    def release(self) -> None:
        """Let every `held` request, waiting or to come, be answered."""
        self.server.released.set()

    def stop(self) -> None:
        self.server.released.set()
        self.server.shutdown()
        self.server.server_close()
