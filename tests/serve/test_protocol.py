"""Protocol-layer units with a fake engine: crashes become a JSON 500 without internals or patient
text, and an engine failure mid-stream ends the stream with an error event."""

import json
import logging

from fastapi.testclient import TestClient

from sm70.serve.api.app import build_app
from sm70.serve.guard.audit import AuditLog
from sm70.serve.guard.auth import KeyStore
from sm70.serve.guard.chain import load_key
from sm70.serve.engines.handle import Event, Handle
from sm70.serve.api.serving import Service

SECRET = "Mrs. Jane Roe, MRN 998877"


class FakeTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(range(len(text.split())))}


class CrashingEngine:
    model_ids = ["fake"]
    max_context = 512
    tokenizer = FakeTokenizer()

    def submit(self, prompt_ids, params, model_id):
        raise RuntimeError(f"kernel exploded while reading {SECRET}")

    def snapshot(self):
        return {}


class FailingEngine(CrashingEngine):
    def submit(self, prompt_ids, params, model_id):
        handle = Handle(prompt_ids, params)
        handle.emit(Event("delta", text="partial "))
        handle.emit(Event("error", text="the model failed on this batch"))
        return handle


def app_for(engine, tmp_path):
    audit = AuditLog(tmp_path / "audit.log", load_key(tmp_path / "audit.key", create=True))
    app = build_app(Service(engine), KeyStore(None), audit, {"model_fp": "x"}, open_access=True)
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False), tmp_path / "audit.log"


def test_crash_is_a_json_500_without_internals(tmp_path, caplog):
    client, log = app_for(CrashingEngine(), tmp_path)
    with caplog.at_level(logging.ERROR, logger="sm70.serve"):
        r = client.post("/v1/completions", json={"prompt": SECRET, "max_tokens": 2})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "Traceback" not in r.text and "Jane" not in r.text and "exploded" not in r.text
    assert "RuntimeError" in caplog.text and "Jane" not in caplog.text      # logged, without patient text
    entry = json.loads(log.read_text())
    assert entry["status"] == 500 and "Jane" not in log.read_text()
    assert client.get("/health").status_code == 200


def test_engine_error_mid_stream_ends_the_stream_cleanly(tmp_path):
    client, log = app_for(FailingEngine(), tmp_path)
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["message"] == "the model failed on this batch"
    assert json.loads(log.read_text().splitlines()[-1])["outcome"] == "engine_error"


def test_non_stream_engine_error_is_503(tmp_path):
    client, _ = app_for(FailingEngine(), tmp_path)
    r = client.post("/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 503 and "model failed" in r.json()["error"]["message"]
