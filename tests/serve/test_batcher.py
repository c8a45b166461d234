"""The embedded engine's continuous batching, checked against the same requests run one at a time."""

import threading
import time

import pytest

from sm70.serve.engines.registry import EmbeddedEngine, EngineSpec
from sm70.serve.engines.sampling import SamplingParams

PROMPTS = ["The patient has", "Hello", "A 45-year-old man presents with chest pain and",
           "Which drug is first line for", "Blood pressure"]


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = EmbeddedEngine(EngineSpec(model=tiny_model, max_batch=8, max_queue=16, threads=1))
    yield engine
    engine.close()


def run(engine, prompt, **params):
    ids = engine.tokenizer(prompt)["input_ids"]
    handle = engine.submit(ids, SamplingParams(**{"max_tokens": 12, "temperature": 0.0, **params}), "m")
    events = list(handle.events_sync())
    return "".join(e.text for e in events if e.kind == "delta"), events[-1]


def test_batched_rows_match_solo_runs(engine):
    solo = {p: run(engine, p, ignore_eos=True)[0] for p in PROMPTS}
    before = engine.batcher.stats.max_batch_seen
    results = {}

    def client(i, prompt):
        time.sleep(0.004 * i)       # staggered: later requests join a batch that is already decoding
        results[i] = run(engine, prompt, ignore_eos=True)[0]

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate(PROMPTS * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(threads))] == [solo[p] for p in PROMPTS * 2]
    assert engine.batcher.stats.max_batch_seen > 1 or before > 1


def test_seeded_sampling_is_reproducible_and_differs_by_seed(engine):
    a = run(engine, "Fever and", temperature=1.0, top_p=0.9, seed=7, max_tokens=16, ignore_eos=True)[0]
    b = run(engine, "Fever and", temperature=1.0, top_p=0.9, seed=7, max_tokens=16, ignore_eos=True)[0]
    c = run(engine, "Fever and", temperature=1.0, top_p=0.9, seed=8, max_tokens=16, ignore_eos=True)[0]
    assert a == b and a != c


def test_length_and_token_counts(engine):
    text, done = run(engine, "Hello", max_tokens=5, ignore_eos=True)
    assert done.kind == "done" and done.finish_reason == "length" and done.completion_tokens == 5


def test_stop_string_cuts_the_text(engine):
    full, _ = run(engine, "The patient has", max_tokens=12, ignore_eos=True)
    stop = full[3:5]
    text, done = run(engine, "The patient has", max_tokens=12, ignore_eos=True, stop=(stop,))
    assert text == full[: full.find(stop)] and done.finish_reason == "stop"


def test_cancelled_request_leaves_the_batch(engine):
    ids = engine.tokenizer("Hello")["input_ids"]
    handle = engine.submit(ids, SamplingParams(max_tokens=100_000, temperature=0, ignore_eos=True), "m")
    first = next(iter(handle.events_sync()))
    assert first.kind == "delta"
    deadline = time.monotonic() + 10
    while engine.batcher.snapshot()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.batcher.snapshot()["running"] == 0


def test_degenerate_sampling_values_are_safe(engine):
    """Finding: temperature=1e-45 and top_p=1e-300 passed validation and failed the whole batch."""
    greedy = run(engine, "Fever and", max_tokens=8, ignore_eos=True)[0]
    assert run(engine, "Fever and", temperature=1e-45, max_tokens=8, ignore_eos=True)[0] == greedy
    text, done = run(engine, "Fever and", temperature=1.0, top_p=1e-300, seed=3, max_tokens=8, ignore_eos=True)
    assert done.kind == "done" and text == greedy            # only the top token is ever kept
