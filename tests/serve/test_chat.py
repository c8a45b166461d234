"""`sm70 chat model=...` in a terminal: a real subprocess reading the user's lines from stdin, on a
model directory (transformers) and on a GGUF export (llama.cpp's llama-server, supervised), as a clinician
would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("which", ["tiny", "gguf"])
def test_terminal_chat_answers_each_line_and_shows_the_disclaimer(which, request):
    if which == "gguf":
        request.getfixturevalue("llama_server_binary")   # skips (fails in CI) without one
    model = (request.getfixturevalue("tiny_model") if which == "tiny"
             else request.getfixturevalue("smollm2_gguf") / "model-q8_0.gguf")
    done = subprocess.run([sys.executable, "-m", "sm70.cli", "chat", f"model={model}", "temperature=0",
                           "max_tokens=12"], input="What is the first-line treatment for anaphylaxis?\n/exit\n",
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not a certified medical device" in done.stderr
    answer = done.stdout.strip()
    assert answer and "<|im_" not in answer and "[INST]" not in answer
