"""Units that need no vLLM: the LoRA rank vLLM is given comes from the adapter (vLLM's default, 16, made
the paper's rank-64 adapter kill the engine), and an engine that reports a problem turns /health, /ready
and requests to 503 (the real engine death is in test_vllm.py)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from sm70.errors import Sm70Error
from sm70.model.vllm import adapter_rank, lora_rank_setting
from sm70.serve.api.app import build_app
from sm70.serve.guard.auth import KeyStore
from sm70.serve.api.serving import Service

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's allowed max_lora_rank values


@pytest.mark.parametrize("config, rank", [
    ({"peft_type": "LORA", "r": 64}, 64),
    ({"peft_type": "LORA", "r": 8, "rank_pattern": {"q_proj": 48, "v_proj": 4}}, 48),
    ({"r": 16}, 16),
])
def test_rank_is_read_from_adapter_config(tmp_path, config, rank):
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_rank(tmp_path) == rank


@pytest.mark.parametrize("config, message", [
    (None, "no adapter_config.json"),
    ({"peft_type": "IA3"}, "not a LoRA adapter"),
])
def test_a_folder_that_is_no_lora_adapter_is_an_error(tmp_path, config, message):
    if config is not None:
        (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(Sm70Error, match=message):
        adapter_rank(tmp_path)


@pytest.mark.parametrize("rank, setting", [(64, 64), (48, 64), (8, 8), (2, 8), (512, 512)])
def test_max_lora_rank_is_the_smallest_allowed_value_that_holds_the_rank(rank, setting):
    assert lora_rank_setting(rank, VLLM_RANKS) == setting


def test_a_rank_above_what_vllm_serves_is_an_error():
    with pytest.raises(Sm70Error, match="above the largest rank vLLM serves"):
        lora_rank_setting(1024, VLLM_RANKS)


class Tokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1, 2, 3]}


class DeadEngine:
    model_ids = ["m"]
    max_context = 512
    tokenizer = Tokenizer()
    problem = "the vLLM engine has died (EngineDeadError; the server log has the cause): restart the server"

    def submit(self, prompt_ids, params, model_id):
        raise AssertionError("a request reached a dead engine")

    def snapshot(self):
        return {"engine": "vllm"}


def test_an_engine_problem_turns_health_ready_and_requests_to_503():
    app = build_app(Service(DeadEngine()), KeyStore(None), None, {}, open_access=True)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/health").status_code == 503 and client.get("/health").json() == {"status": "unavailable"}
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["problems"] == [DeadEngine.problem]
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 503 and r.json()["error"]["message"] == DeadEngine.problem
