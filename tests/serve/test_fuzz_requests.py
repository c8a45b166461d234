"""Bounded, seeded fuzzing of the server's request parsing, against the real server on loopback:
valid chat and completion bodies mutated the ways hostile clients break them (tests/inputs/test_fuzz.py's
mutator). Every answer is a documented status with a JSON error, never a 5xx but the documented 503,
and the server still answers afterwards."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from tests.inputs.test_fuzz import mutant

EXAMPLES = 60  # per endpoint: a few seconds with the tiny model
SEEDS = {
    "/v1/chat/completions": [
        json.dumps({"messages": [{"role": "user", "content": "Dose of amoxicillin?"}], "max_tokens": 1}).encode(),
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                    "max_tokens": 1, "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["\n"]}).encode()],
    "/v1/completions": [json.dumps({"prompt": "Question: Which vitamin?", "max_tokens": 1}).encode(),
                        json.dumps({"prompt": ["a", "b"], "max_tokens": 1, "temperature": 0}).encode()],
}
DOCUMENTED = {200, 400, 401, 404, 405, 413, 415, 422, 429, 503}


@pytest.mark.parametrize("path", list(SEEDS))
def test_mutated_requests_get_documented_answers(server, path):
    rnd = random.Random(path)
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(EXAMPLES):
            body = mutant(rnd, SEEDS[path])
            r = client.post(path, content=body, headers=headers if i % 5 else {"Content-Type": "application/json"})
            assert r.status_code in DOCUMENTED, (i, r.status_code, r.text[:500], body[:500])
            if r.status_code != 200:
                assert "error" in r.json(), (i, r.text[:500])
        assert client.get("/health").status_code == 200
