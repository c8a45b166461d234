"""One user's request cannot end another's: on the shared server, a long stream from one client
finishes while requests with hostile sampling values, or a sequence that fails, run in its batch."""

import json
import threading

import httpx
import pytest

from sm70.serve.engines import batcher


def long_stream(server, result: dict, started: threading.Event):
    body = {"prompt": "The patient", "max_tokens": 300, "ignore_eos": True, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {server.key}"}) as r:
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
    result["events"] = events


def alongside(server, requests):
    """Run `requests` (bodies) while a 300-token stream is decoding; (stream events, responses)."""
    result, started = {}, threading.Event()
    t = threading.Thread(target=long_stream, args=(server, result, started))
    t.start()
    assert started.wait(60)
    answers = [httpx.post(server.url + "/v1/completions", json=b, timeout=60,
                          headers={"Authorization": f"Bearer {server.key}"}) for b in requests]
    t.join()
    return result["events"], answers


def assert_whole(events):
    assert events[-1] == "[DONE]" and not any('"error"' in e for e in events), events[-3:]
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1] if e.startswith("{"))


@pytest.mark.parametrize("field, value", [("seed", 2**70), ("seed", 2**64), ("seed", -(2**63) - 1),
                                          ("temperature", float("nan")), ("top_p", float("inf"))])
def test_out_of_range_sampling_values_are_a_400(server, field, value):
    r = httpx.post(server.url + "/v1/completions", timeout=60, headers={"Authorization": f"Bearer {server.key}",
                                                                         "content-type": "application/json"},
                   content=json.dumps({"prompt": "Hi", "max_tokens": 2, field: value}))
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_hostile_sampling_values_do_not_end_other_streams(server):
    """Finding: seed=2**70, temperature=1e-45, top_p=1e-300 made the batch fail: another user's
    1,500-token stream ended with "the model failed on this batch"."""
    hostile = [{"prompt": "Hi", "max_tokens": 8, "seed": 2**70},
               {"prompt": "Hi", "max_tokens": 8, "temperature": 1e-45},
               {"prompt": "Hi", "max_tokens": 8, "top_p": 1e-300, "seed": 2**63 - 1},
               {"prompt": "Hi", "max_tokens": 8, "seed": -(2**63)}]
    events, answers = alongside(server, hostile)
    assert [r.status_code for r in answers] == [400, 200, 200, 200]
    assert_whole(events)


def test_a_failing_sequence_ends_alone(server, monkeypatch):
    real = batcher.choose_token

    def poisoned(logits, params, generator):
        if params.seed == 666:
            raise RuntimeError("probability tensor contains inf")
        return real(logits, params, generator)

    monkeypatch.setattr(batcher, "choose_token", poisoned)
    events, answers = alongside(server, [{"prompt": "Hi", "max_tokens": 8, "seed": 666}])
    assert answers[0].status_code == 503 and "failed on this request" in answers[0].json()["error"]["message"]
    assert_whole(events)
