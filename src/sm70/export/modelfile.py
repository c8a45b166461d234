"""The Ollama Modelfile beside each GGUF, whose TEMPLATE renders the prompt the model was trained on.

Ollama does not run the model's Jinja `chat_template`; it runs the Modelfile's Go text/template. A
template that differs from training by one space or token makes a fine-tune answer gibberish
(ollama/ollama#6823). So sm70 never guesses: each family below is an Ollama-style Go template plus a
Python mirror of it (the tests render both with real Go), and `detect_family` accepts a family only
when its mirror renders, on every probe conversation, the text the tokenizer's own chat template renders.

BOS: llama.cpp (under Ollama) prepends BOS itself when the GGUF says so, and the converter takes that
flag from the HF tokenizer's own post-processor. So no TEMPLATE writes the leading BOS (as Ollama's
llama2-chat template does not), and the comparison drops a leading BOS text from the Jinja rendering
exactly when the tokenizer adds BOS itself; a BOS inside the text (Llama-2's `</s><s>` between turns)
stays in the TEMPLATE, since llama.cpp adds only the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

from sm70.errors import Sm70Error


def ollama_template_data(messages: list[dict], system: str = "") -> dict:
    """The data Ollama executes TEMPLATE with for a chat: the Modelfile's SYSTEM goes first when the
    conversation has no leading system message (server/routes.go), consecutive messages of one role are
    merged with a blank line, and `.System` joins every system message (template.go `collate`)."""
    msgs = list(messages)
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    collated: list[dict] = []
    for m in msgs:
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return {"System": "\n\n".join(m["content"] for m in msgs if m["role"] == "system"), "Messages": collated}


@dataclass(frozen=True)
class Family:
    name: str
    go_template: str
    stops: tuple[str, ...]  # Ollama's own stop list for its template of this family
    render: Callable[[dict], str]  # the Go template's output on `ollama_template_data`, in Python
    default_system: str = ""  # what the chat template inserts when a conversation has no system message


def _chatml(data: dict) -> str:
    turns = "".join(f"<|im_start|>{m['Role']}\n{m['Content']}<|im_end|>\n" for m in data["Messages"])
    return turns + "<|im_start|>assistant\n"


def _llama2(data: dict) -> str:
    # Meta's format: the system prompt sits inside the first [INST]; every later user turn opens with
    # BOS text after the previous answer's EOS (only the very first BOS is llama.cpp's to add).
    out, first = [], True
    for m in data["Messages"]:
        if m["Role"] == "user":
            system = f"<<SYS>>\n{data['System']}\n<</SYS>>\n\n" if first and data["System"] else ""
            out.append(("" if first else "<s>") + f"[INST] {system}{m['Content']} [/INST]")
        elif m["Role"] == "assistant":
            out.append(f" {m['Content']} </s>")
        else:
            continue
        first = False
    return "".join(out)


def _llama3(data: dict) -> str:
    turns = "".join(f"<|start_header_id|>{m['Role']}<|end_header_id|>\n\n{m['Content']}<|eot_id|>"
                    for m in data["Messages"])
    return turns + "<|start_header_id|>assistant<|end_header_id|>\n\n"


# The Go templates take the shape of Ollama's library templates (template/*.gotmpl): system messages
# arrive inside .Messages, and the prompt always ends by opening the assistant's turn.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("chatml", "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                     "{{ end }}<|im_start|>assistant\n",
           ("<|im_start|>", "<|im_end|>"), _chatml),
    Family("llama2", '{{- $first := true }}\n{{- range .Messages }}\n'
                     '{{- if eq .Role "user" }}{{ if not $first }}<s>{{ end }}[INST] '
                     '{{ if and $first $.System }}<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n{{ end }}'
                     '{{ .Content }} [/INST]\n{{- $first = false }}\n'
                     '{{- else if eq .Role "assistant" }} {{ .Content }} </s>\n{{- $first = false }}\n'
                     '{{- end }}\n{{- end }}',
           ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"), _llama2),
    Family("llama3", "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                     "{{ .Content }}<|eot_id|>\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
           ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), _llama3),
)}

# Contents without surrounding whitespace: Go templates cannot `trim` as Llama-3's Jinja does, so a
# probe with padding would reject that family for a difference real users rarely send.
PROBES: dict[str, list[dict]] = {
    "system+user": [{"role": "system", "content": "You answer clinicians briefly."},
                    {"role": "user", "content": "Adult amoxicillin dose?"}],
    "user": [{"role": "user", "content": "Adult amoxicillin dose?"}],
    "system+user+assistant+user": [{"role": "system", "content": "You answer clinicians briefly."},
                                   {"role": "user", "content": "Adult amoxicillin dose?"},
                                   {"role": "assistant", "content": "500 mg every 8 hours.\nCheck renal function."},
                                   {"role": "user", "content": "And for children?"}],
    "user+assistant+user": [{"role": "user", "content": "Adult amoxicillin dose?"},
                            {"role": "assistant", "content": "500 mg every 8 hours."},
                            {"role": "user", "content": "And for children?"}],
}
_MARK = "\x00system\x00"  # stands for a system prompt while reading a template's built-in default


def jinja_prompt(tokenizer, messages: list[dict]) -> str:
    """The chat template's prompt as llama.cpp must receive it: without the leading BOS it adds itself."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]
    if not adds_bos:
        return text  # SmolLM2's bos_token is <|im_start|>: here it is ChatML's own text, never stripped
    if not text.startswith(bos):
        raise Sm70Error(f"the tokenizer adds {bos!r} to every text but its chat template does not write it, so "
                        "llama.cpp would prompt with a BOS the chat template's prompt lacks; write the TEMPLATE by hand")
    return text[len(bos):]


def _builtin_system(family: Family, user_only: str) -> str:
    """The system prompt the chat template inserts when none is given (SmolLM2's does), or ''."""
    if family.render(ollama_template_data(PROBES["user"])) == user_only:
        return ""
    head, _, tail = family.render(ollama_template_data(PROBES["user"], system=_MARK)).partition(_MARK)
    if len(user_only) > len(head) + len(tail) and user_only.startswith(head) and user_only.endswith(tail):
        return user_only[len(head):len(user_only) - len(tail)]
    return ""


def _first_miss(family: Family, jinja: dict[str, str]) -> tuple[int, str] | None:
    """Where the family first differs from the chat template: (character, a message naming probe and texts)."""
    for probe, messages in PROBES.items():
        ours, theirs = family.render(ollama_template_data(messages, family.default_system)), jinja[probe]
        if ours != theirs:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            lo = max(0, at - 20)
            return at, (f"on probe {probe!r} the chat template renders {theirs[lo:at + 30]!r} where {family.name} "
                        f"renders {ours[lo:at + 30]!r} (character {at})")
    return None


def detect_family(tokenizer) -> Family:
    """The family whose template renders the tokenizer's chat template's text on every probe."""
    if not getattr(tokenizer, "chat_template", None):
        raise Sm70Error("the tokenizer has no chat template: no training prompt format to write a TEMPLATE for")
    jinja = {probe: jinja_prompt(tokenizer, messages) for probe, messages in PROBES.items()}
    misses = []
    for family in FAMILIES.values():
        family = replace(family, default_system=_builtin_system(family, jinja["user"]))
        miss = _first_miss(family, jinja)
        if miss is None:
            return family
        misses.append(miss)
    nearest_first = "; ".join(text for _, text in sorted(misses, key=lambda miss: -miss[0]))
    raise Sm70Error(f"the chat template matches no Modelfile family ({', '.join(FAMILIES)}): {nearest_first}; "
                    "write the TEMPLATE by hand (llama.cpp itself reads the chat template from the GGUF)")


def _quoted(field: str, text: str) -> str:
    # Ollama's Modelfile parser has no escapes: a triple-quoted value ends at the first `"""` before a
    # space or newline, and it silently drops unprintable characters; so both are refused here.
    if '"""' in text:
        raise Sm70Error(f'the Modelfile {field} contains """, which would end its triple-quoted value early')
    bad = next((c for c in text if not (c.isprintable() or c in "\n\t")), None)
    if bad is not None:
        raise Sm70Error(f"the Modelfile {field} contains {bad!r}, which Ollama's parser would silently drop")
    return f'"""{text}"""'


def modelfile(tokenizer, gguf_name: str, system_prompt: str, disclaimer: str) -> str:
    """The Modelfile for `gguf_name` (a file beside it); an empty system_prompt keeps the template's own default."""
    if not re.fullmatch(r"[\w.+-]+\.gguf", gguf_name):
        raise Sm70Error(f"gguf_name={gguf_name!r}: a file name ending .gguf, without folders or spaces, is needed")
    family = detect_family(tokenizer)
    system = system_prompt or family.default_system
    stops = list(family.stops)
    # the EOS closes each answer when the template writes it after one (Llama-2's </s>, SmolLM2's <|im_end|>)
    if tokenizer.eos_token and tokenizer.eos_token in jinja_prompt(tokenizer, PROBES["user+assistant+user"]):
        stops += [tokenizer.eos_token] if tokenizer.eos_token not in stops else []
    for stop in stops:
        if not stop.isprintable() or '"' in stop:
            raise Sm70Error(f"stop string {stop!r} cannot be written as a Modelfile PARAMETER")
    lines = [f"# Ollama Modelfile written by sm70 for {gguf_name}: ollama create NAME -f THIS_FILE",
             *(f"# {line}".rstrip() for line in disclaimer.splitlines()),
             f"# TEMPLATE: the {family.name} family, checked to render what the model's own chat template renders.",
             f"FROM ./{gguf_name}",
             f"TEMPLATE {_quoted('TEMPLATE', family.go_template)}"]
    if system:
        lines.append(f"SYSTEM {_quoted('SYSTEM', system)}")
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"
