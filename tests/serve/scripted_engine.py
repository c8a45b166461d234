"""An OpenAI-style engine on loopback whose every answer the test decides: what a real engine does
only by chance (cut a stream, close the connection) it does on cue, so the gateway's handling of it
is tested deterministically.

The user's last message names the script: `whole` streams an answer that ends with a finish_reason
and `[DONE]`; `cut` sends `[DONE]` before any finish_reason (what llama.cpp's Python server does to
an answer in progress when another request arrives); `hangup` closes the connection after a few
events, without `[DONE]`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "scripted"
WORDS = ["Intramuscular", " epinephrine", " 0.5", " mg", " now."]


def _chunk(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": MODEL,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:   # quiet: the test reads the gateway's audit, not this
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
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
        self.server.requests.append(script)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        events = [_chunk(w, None) for w in WORDS]
        if script == "whole":
            events += [_chunk(None, "stop"), b"data: [DONE]\n\n"]
        elif script == "cut":
            events += [b"data: [DONE]\n\n"]
        elif script != "hangup":
            raise ValueError(f"unknown script {script!r}")
        for e in events:
            self.wfile.write(e)
            self.wfile.flush()
        self.close_connection = True


class ScriptedEngine:
    """`ScriptedEngine()` serves on 127.0.0.1 at `.url` (OpenAI base URL: `.url + "/v1"`) until `.stop()`."""

    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.requests = []
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
