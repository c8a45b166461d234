"""The README.md of an export folder: what the files are and how to run them with llama.cpp, Ollama
and `sm70 serve`, written for the person who installs the model on a device."""

from __future__ import annotations


def export_readme(cfg, files: list[str], meta: dict) -> str:
    first = files[0]
    tag = first.removeprefix("model-").removesuffix(".gguf")
    listing = "\n".join(f"- `{name}` with `Modelfile.{name.removeprefix('model-').removesuffix('.gguf')}`"
                        for name in files)
    source = f"`{cfg.model}`" + (f" with the adapter `{cfg.adapter}` merged in" if cfg.adapter else "")
    return f"""# sm70 export

**Decision support for clinicians, not a certified medical device.** Every answer must be checked
against current guidelines and the patient's record by a licensed clinician.

GGUF files of {source}, converted and quantized by llama.cpp (llama-cpp-python
{_llama_version()}), exported by sm70 {meta['sm70.version']}:

{listing}

`export_card.md` shows, per file, whether the chat template and the token ids are the training
ones, how far its next-token distribution is from the unquantized model's (KL, top-1 agreement,
perplexity) and its MedQA/PubMedQA accuracy beside the unquantized model's. Choose the smallest file
whose card says `pass`. `sm70 export verify .` checks the folder again.

## llama.cpp

    llama-cli -m {first} -cnv          # the chat template inside the file is the training template
    llama-server -m {first} --host 127.0.0.1 --port 8080

## Ollama

    ollama create sm70-{tag} -f Modelfile.{tag}
    ollama run sm70-{tag}

The Modelfile's TEMPLATE renders exactly the training prompt; its SYSTEM prompt is sm70's default.

## sm70 serve (per-user keys, audit log, PHI scrubbing in front of llama.cpp)

    sm70 keys add clinician keys=keys.json
    sm70 serve model={first} keys=keys.json

Neither llama.cpp's nor Ollama's own server has per-user keys or an audit trail: next to patient
data, put `sm70 serve` in front (`sm70 serve upstream=http://127.0.0.1:8080/v1`).

Metadata inside every file: {", ".join(f"`{k}`" for k in meta)}.
"""


def _llama_version() -> str:
    from sm70.export.llamacpp import installed_version

    return installed_version()
