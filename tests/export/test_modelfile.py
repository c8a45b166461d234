"""The Modelfile's TEMPLATE, rendered by real Go text/template, is the prompt of the model's own chat template."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sm70.errors import Sm70Error
from sm70.export.modelfile import FAMILIES, PROBES, detect_family, modelfile, ollama_template_data
from sm70.model.tiny import LLAMA2_CHAT_TEMPLATE

GO_PROGRAM = Path(__file__).parent / "gotemplate" / "main.go"
DISCLAIMER = "Decision support for clinicians, not a certified medical device."
SYSTEM = "You are a careful clinical assistant.\nSay when you are unsure."
GGUF = "model-q8_0.gguf"
# Meta-Llama-3-8B-Instruct's chat template, as its tokenizer_config.json carries it.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """render(template, data) -> str by Go's text/template, built once per session."""
    go = shutil.which("go")
    if go is None:
        reason = "go is absent, so no real text/template can render the TEMPLATE (apt-get install golang-go)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs golang-go: there the check must run, never skip
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("gotemplate")
    env = {**os.environ, "GOCACHE": str(root / "cache"), "GOPATH": str(root / "gopath"), "GOFLAGS": "",
           "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    binary = root / "gotemplate"
    subprocess.run([go, "build", "-o", str(binary), str(GO_PROGRAM)], env=env, check=True, capture_output=True)

    def render(template: str, data: dict) -> str:
        payload = json.dumps({"template": template, "data": data}).encode()
        return subprocess.run([str(binary)], input=payload, capture_output=True, check=True).stdout.decode()

    return render


def _tokenizer(path: Path, chat_template: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    return _tokenizer(smollm2)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model):
    return _tokenizer(tiny_model)


def _value(text: str, field: str) -> str:
    return re.search(rf'^{field} """(.*?)"""$', text, re.S | re.M).group(1)


CONVERSATIONS = {**PROBES, "user+user (Ollama merges them)": [{"role": "user", "content": "Fever."},
                                                              {"role": "user", "content": "And rash?"}]}


@pytest.mark.parametrize("modelfile_system", ["", SYSTEM], ids=["no-SYSTEM", "SYSTEM"])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_go_renders_what_the_python_mirror_renders(go_render, family, conversation, modelfile_system):
    data = ollama_template_data(CONVERSATIONS[conversation], modelfile_system)
    assert go_render(FAMILIES[family].go_template, data) == FAMILIES[family].render(data)


# strip_bos: the tokenizer prepends BOS to every text (as llama.cpp will), so the chat template's
# leading BOS text is not the TEMPLATE's to write; SmolLM2's bos_token <|im_start|> is ChatML's own text.
@pytest.mark.parametrize("model, family, strip_bos", [("smollm2", "chatml", False), ("tiny", "llama2", True)])
def test_the_modelfile_template_renders_the_training_prompt(request, go_render, model, family, strip_bos):
    tok = request.getfixturevalue(f"{model}_tokenizer")
    assert detect_family(tok).name == family
    text = modelfile(tok, GGUF, SYSTEM, DISCLAIMER)
    template, system = _value(text, "TEMPLATE"), _value(text, "SYSTEM")
    assert system == SYSTEM
    for messages in PROBES.values():
        rendered = go_render(template, ollama_template_data(messages, system))
        # Ollama puts SYSTEM first exactly where the conversation brings no system message
        trained = messages if messages[0]["role"] == "system" else [{"role": "system", "content": SYSTEM}, *messages]
        jinja = tok.apply_chat_template(trained, tokenize=False, add_generation_prompt=True)
        assert rendered == (jinja.removeprefix(tok.bos_token) if strip_bos else jinja)
        # and token for token: llama.cpp adds BOS where the tokenizer does; the chat template's text is taken as is
        assert tok(rendered)["input_ids"] == tok(jinja, add_special_tokens=False)["input_ids"]


def test_smollm2_keeps_its_builtin_system_prompt_when_sm70_gives_none(smollm2_tokenizer, go_render):
    family = detect_family(smollm2_tokenizer)
    assert family.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    text = modelfile(smollm2_tokenizer, GGUF, "", DISCLAIMER)
    user = PROBES["user"]
    rendered = go_render(_value(text, "TEMPLATE"), ollama_template_data(user, _value(text, "SYSTEM")))
    assert rendered == smollm2_tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)


def test_meta_llama3_template_is_the_llama3_family(tiny_model):
    assert detect_family(_tokenizer(tiny_model, LLAMA3_CHAT_TEMPLATE)).name == "llama3"


@pytest.mark.parametrize("model, template, shown", [
    ("smollm2", lambda t: t.replace("<|im_start|>", "<|turn|>"),
     ["renders '<|turn|>system\\nYou answer clinic' where chatml renders '<|im_start|>system"]),
    ("tiny", lambda t: t.replace("' [/INST]'", "'  [/INST]'"),
     ["renders 't amoxicillin dose?  [/INST]' where llama2 renders 't amoxicillin dose? [/INST]'"]),
], ids=["chatml-with-another-token", "llama2-with-an-extra-space"])
def test_a_template_of_no_family_is_refused_naming_probe_and_difference(request, model, template, shown):
    tok = _tokenizer(request.getfixturevalue("smollm2" if model == "smollm2" else "tiny_model"))
    tok.chat_template = template(tok.chat_template)
    with pytest.raises(Sm70Error) as e:
        detect_family(tok)
    message = str(e.value)
    assert "matches no Modelfile family (chatml, llama2, llama3)" in message and "by hand" in message
    assert "on probe 'system+user'" in message
    for text in shown:
        assert text in message


def test_a_bos_the_chat_template_does_not_write_is_refused(tiny_model):
    tok = _tokenizer(tiny_model, LLAMA2_CHAT_TEMPLATE.replace("bos_token + ", ""))
    with pytest.raises(Sm70Error, match="adds '<s>' to every text but its chat template does not write it"):
        detect_family(tok)


def test_the_modelfile_text(smollm2_tokenizer, tiny_tokenizer):
    text = modelfile(smollm2_tokenizer, GGUF, SYSTEM, DISCLAIMER)
    lines = text.splitlines()
    assert lines[0].startswith("# Ollama Modelfile written by sm70") and f"# {DISCLAIMER}" in lines
    assert f"FROM ./{GGUF}" in lines and f'SYSTEM """{SYSTEM}"""' in text
    assert [line for line in lines if line.startswith("PARAMETER")] == [
        'PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"']
    assert 'PARAMETER stop "</s>"' in modelfile(tiny_tokenizer, GGUF, SYSTEM, DISCLAIMER).splitlines()


@pytest.mark.parametrize("system, name, error", [
    ('Quote """this""" verbatim.', GGUF, 'SYSTEM contains """'),
    ("zero\u200bwidth", GGUF, "silently drop"),
    (SYSTEM, "../model.gguf", "without folders"),
])
def test_what_the_modelfile_cannot_carry_is_refused(smollm2_tokenizer, system, name, error):
    with pytest.raises(Sm70Error, match=re.escape(error)):
        modelfile(smollm2_tokenizer, name, system, DISCLAIMER)
