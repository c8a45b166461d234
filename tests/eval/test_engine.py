"""The scoring engine: prefix sharing gives the log-likelihoods of unshared (lm-eval style) scoring,
at every batch size, and falls back where a shared prefix is not a token boundary."""

from __future__ import annotations

import pytest

from sm70.eval import engine
from sm70.eval.loglik import LoglikScorer, Request
from sm70.eval.tasks import (
    continuations,
    fewshot_block,
    get_task,
    load_task,
    question_text,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def loaded(tiny_model):
    from sm70.model.load import load_model, load_tokenizer

    model = load_model(tiny_model)
    model.eval()
    return model, load_tokenizer(tiny_model)


def requests(style: str, shots: int, n: int = 7):
    task = get_task("medqa")
    items = load_task("medqa")[:n]
    block = fewshot_block(task, load_task("medqa", split="train")[:shots], style)
    return [Request(block + question_text(task, i), tuple(continuations(task, i, style))) for i in items], block


def max_diff(a, b) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.mark.parametrize("style,shots,batch_size", [
    ("lm-eval", 0, 3), ("lm-eval", 2, 4), ("option-text", 0, 1), ("option-text", 2, 3), ("option-text", 3, 8),
])
def test_shared_prefix_equals_unshared(loaded, style, shots, batch_size):
    reqs, block = requests(style, shots)
    scorer = LoglikScorer(*loaded, batch_size=batch_size)
    shared = scorer.score(reqs, shared_prefix=engine.shared_prefix([r.context for r in reqs]))
    reference = scorer.score_requests_unshared(reqs)
    assert max_diff(shared, reference) < 1e-4
    if shots:
        assert scorer.stats["shared_items"] == len(reqs) and scorer.stats["prefix_tokens"] > 100


def test_prefix_computed_once_across_calls(loaded):
    reqs, block = requests("option-text", 2)
    scorer = LoglikScorer(*loaded, batch_size=2)
    prefix = engine.shared_prefix([r.context for r in reqs])
    first = scorer.score(reqs[:3], shared_prefix=prefix)
    tokens = scorer.stats["prefix_tokens"]
    second = scorer.score(reqs[3:], shared_prefix=prefix)
    assert scorer.stats["prefix_tokens"] == tokens  # the second call reused the cached prefix
    assert max_diff(first + second, scorer.score_requests_unshared(reqs)) < 1e-4


def test_prefix_off_a_token_boundary_falls_back(loaded):
    reqs, block = requests("option-text", 2)
    scorer = LoglikScorer(*loaded, batch_size=4)
    # Cut inside the word "Question" of the first scored item: its tokens differ from the prefix's.
    cut = block + "Quest"
    result = scorer.score(reqs, shared_prefix=cut)
    assert scorer.stats["shared_items"] == 0 and scorer.stats["unshared_items"] == len(reqs)
    assert max_diff(result, scorer.score_requests_unshared(reqs)) < 1e-4


def test_too_long_requests_truncate_like_lm_eval(loaded):
    reqs, _ = requests("option-text", 0, n=3)
    scorer = LoglikScorer(*loaded, batch_size=2, max_length=64)
    scores = scorer.score(reqs)
    enc = scorer.encode_request(reqs[0])
    # lm-eval: (context + continuation)[-(max_length + 1):][:-1], scored over the continuation.
    expected = scorer.score_unshared([(enc.context, c) for c in enc.continuations])
    assert scores[0] == pytest.approx(expected, abs=1e-6)
    assert scorer.stats["unshared_items"] == 3


def test_encode_pair_moves_trailing_space(loaded):
    scorer = LoglikScorer(*loaded)
    ctx, cont = scorer.encode_pair("Answer: ", "B")
    assert scorer.tokenizer.decode(ctx, skip_special_tokens=True) == "Answer:"
    assert scorer.tokenizer.decode(cont) == " B"


def test_shared_prefix_text():
    assert engine.shared_prefix(["a\n\nQuestion: x", "a\n\nQuestion: y"]) == "a\n\n"
    assert engine.shared_prefix(["Question: x", "Question: y"]) == ""
    assert engine.shared_prefix(["only one"]) == ""


def test_argmax_takes_first_maximum():
    assert engine.argmax([-1.0, -0.5, -0.5]) == 1


def test_generate_rows(loaded):
    from sm70.eval.generate import HFGenerator

    task = get_task("pubmedqa")
    items = load_task("pubmedqa")[:3]
    setting = engine.Setting(mode="generate", template="chat", max_new_tokens=4)
    contexts = [engine.build_context(task, i, [], setting, loaded[1]) for i in items]
    assert contexts[0].startswith("<s>[INST] ")
    rows = engine.score_generate(HFGenerator(*loaded, max_new_tokens=4, batch_size=2), "pubmedqa", items, contexts)
    assert [r["id"] for r in rows] == [i.id for i in items]
    for row in rows:
        assert isinstance(row["text"], str)
        assert row["correct"] == (row["extracted"] is not None and row["extracted"] == row["gold"])
