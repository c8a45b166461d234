"""Completion-only labels and clear errors for malformed data rows."""

from __future__ import annotations

import json

import pytest

from sm70.errors import Sm70Error
from sm70.model.load import load_tokenizer
from sm70.train.examples import IGNORE, read_rows, tokenize


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def test_prompt_tokens_carry_no_loss(tokenizer, medical_rows):
    rows = medical_rows(copies=1)
    examples, truncated = tokenize(rows, tokenizer, max_length=512)
    assert truncated == 0
    for row, ex in zip(rows, examples):
        prompt = tokenizer(row["prompt"])["input_ids"]
        assert ex.input_ids[: len(prompt)] == prompt
        assert ex.labels[: len(prompt)] == [IGNORE] * len(prompt)
        target = [t for t in ex.labels if t != IGNORE]
        assert target == ex.input_ids[len(prompt):] and target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == row["completion"]


def test_whole_sequence_loss_when_completion_only_is_off(tokenizer, medical_rows):
    (ex,), _ = tokenize(medical_rows(copies=1)[:1], tokenizer, max_length=512, completion_only=False)
    assert ex.labels[0] == IGNORE and ex.labels[1:] == ex.input_ids[1:]


def test_long_rows_are_truncated_not_dropped_and_keep_part_of_the_answer(tokenizer):
    row = {"id": "long", "prompt": "Question: " + "chest pain " * 200 + "\nAnswer:", "completion": " A"}
    (ex,), truncated = tokenize([row], tokenizer, max_length=64)
    assert truncated == 1 and len(ex) == 64
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert [t for t in ex.labels if t != IGNORE] == tokenizer(" A", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]


@pytest.mark.parametrize("line, message", [
    ("{not json", "train.jsonl:2: not valid JSON"),
    (json.dumps({"id": "x", "prompt": "Question: ?"}), "train.jsonl:2: completion: missing"),
    (json.dumps({"id": "x", "prompt": 3, "completion": " A"}), "train.jsonl:2: prompt: missing or not a string"),
    (json.dumps({"id": "x", "prompt": "Q", "completion": ""}), "train.jsonl:2: completion: empty"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, line, message):
    good = json.dumps({"id": "ok", "source": "medqa", "prompt": "Question: ?\nAnswer:", "completion": " A"})
    path = tmp_path / "train.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(Sm70Error, match=message):
        read_rows(path)


def test_a_chat_prompt_that_writes_bos_gets_no_second_one(tokenizer):
    """Llama-2's template writes `<s>[INST]`: the training ids start with one BOS, as eval, serving and
    llama.cpp read the same text (a doubled BOS would be a token no deployment ever sends)."""
    from sm70.render import apply_template

    chat = apply_template("chat", "Answer", "What is a normal adult resting heart rate?", tokenizer=tokenizer)
    assert chat.startswith(tokenizer.bos_token)
    (example, plain), _ = tokenize([{"id": "c", "prompt": chat, "completion": " 60-100"},
                                    {"id": "p", "prompt": "No template", "completion": " x"}], tokenizer, 256)
    bos = tokenizer.bos_token_id
    assert example.input_ids[0] == bos and example.input_ids[1] != bos
    assert example.input_ids[:len(tokenizer(chat, add_special_tokens=False)["input_ids"])] == \
        tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert plain.input_ids[0] == bos  # a plain prompt still gets the tokenizer's own BOS
