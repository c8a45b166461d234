"""`sm70 COMMAND [RECIPE.yaml] [POSITIONAL ...] [key=value ...]`.

One table maps each command to its config class and the function that runs it. Modules are
imported only when their command runs, so `sm70 --help` and config checks stay instant.
Positional arguments fill the command's named fields in order (`sm70 model tiny OUT` sets `out`).
Every command runs with the hub switched off unless SM70_ALLOW_HUB=1 (see `sm70.offline`).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from sm70 import offline
from sm70.errors import Sm70Error


@dataclass(frozen=True)
class Command:
    module: str            # module that holds the config class and the function
    config: str            # name of the pydantic Config subclass in that module
    function: str          # name of the function taking the config
    positionals: tuple[str, ...] = ()
    help: str = ""


COMMANDS: dict[tuple[str, ...], Command] = {
    ("model", "tiny"): Command("sm70.model.tiny", "TinyModelConfig", "build_tiny_model", ("out",),
                               "write the deterministic tiny Llama used by the demo and the tests"),
    ("model", "fetch"): Command("sm70.model.fetch", "FetchConfig", "fetch", ("name",),
                                "fetch a known model (licence and hashes pinned) into a model directory"),
    ("model", "import"): Command("sm70.model.importer", "ImportConfig", "import_gguf", ("file",),
                                 "turn a GGUF file into a Hugging Face model directory"),
    ("data", "build"): Command("sm70.data.build", "DataConfig", "build",
                               help="standardize, deduplicate and decontaminate the training set"),
    ("train",): Command("sm70.train.sft", "TrainConfig", "train", help="QLoRA fine-tuning"),
    ("merge",): Command("sm70.train.merge", "MergeConfig", "merge", help="fold a LoRA adapter into its base model"),
    ("eval",): Command("sm70.eval.run", "EvalConfig", "evaluate", help="score MedQA, PubMedQA, USMLE"),
    ("compare",): Command("sm70.eval.compare", "CompareConfig", "compare", ("run_a", "run_b"),
                          "paired comparison of two evaluation runs"),
    ("index", "build"): Command("sm70.retrieval.index", "IndexConfig", "build_index",
                                help="chunk a folder of documents and build its search index (BM25, dense)"),
    ("index", "search"): Command("sm70.retrieval.search", "SearchConfig", "search", ("index", "query"),
                                 "the chunks of an index that best answer a question"),
    ("serve",): Command("sm70.serve.main", "ServeConfig", "serve", help="OpenAI-compatible private server"),
    ("chat",): Command("sm70.serve.chat", "ChatConfig", "chat", help="terminal chat"),
    ("keys", "add"): Command("sm70.serve.guard.auth", "KeysConfig", "add_key", ("name",), "create an API key"),
    ("keys", "revoke"): Command("sm70.serve.guard.auth", "KeysConfig", "revoke_key", ("name",), "revoke an API key"),
    ("keys", "list"): Command("sm70.serve.guard.auth", "KeysListConfig", "list_keys", help="names, dates, limits, last use"),
    ("audit", "verify"): Command("sm70.serve.guard.audit", "VerifyConfig", "verify", ("log",),
                                 "check an audit log's hash chain"),
    ("export", "gguf"): Command("sm70.export.gguf", "ExportConfig", "export_gguf",
                                help="GGUF files for llama.cpp / Ollama on a device, with their export card"),
    ("export", "verify"): Command("sm70.export.verify", "VerifyConfig", "verify", ("folder",),
                                  "check an export folder again against the HF model"),
    ("export", "converter"): Command("sm70.export.llamacpp", "ConverterConfig", "install_converter",
                                     help="unpack llama.cpp's converter of the installed llama-cpp-python"),
    ("run",): Command("sm70.pipeline", "PipelineConfig", "run_pipeline", help="the whole pipeline from one file"),
    ("demo",): Command("sm70.pipeline", "DemoConfig", "demo", help="the pipeline on the tiny model and samples"),
}


def usage() -> str:
    lines = ["usage: sm70 COMMAND [RECIPE.yaml] [ARGS ...] [key=value ...]", "",
             "Decision support for clinicians, not a certified medical device.", "", "commands:"]
    for words, cmd in COMMANDS.items():
        args = " ".join(p.upper() for p in cmd.positionals)
        lines.append(f"  {' '.join(words) + (' ' + args if args else ''):<26} {cmd.help}")
    return "\n".join(lines)


def split_args(argv: list[str]) -> tuple[Command, tuple[str, ...], str | None, list[str], list[str]]:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            rest = argv[n:]
            break
    else:
        raise Sm70Error(f"unknown command {' '.join(argv[:2])!r}\n\n{usage()}")
    cmd = COMMANDS[words]
    recipe = None
    positionals: list[str] = []
    overrides: list[str] = []
    for arg in rest:
        if arg == "--plan":
            overrides.append("plan=true")
        elif "=" in arg and not arg.startswith(("/", ".")):
            overrides.append(arg)
        elif recipe is None and not positionals and arg.endswith((".yaml", ".yml")) and os.path.isfile(arg):
            recipe = arg
        else:
            positionals.append(arg)
    if len(positionals) > len(cmd.positionals):
        raise Sm70Error(f"sm70 {' '.join(words)}: unexpected argument {positionals[len(cmd.positionals)]!r}")
    overrides = [f"{name}={value}" for name, value in zip(cmd.positionals, positionals)] + overrides
    return cmd, words, recipe, overrides, positionals


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    offline.apply()   # before any command module imports the hub libraries, which read it once
    if not argv or argv[0] in ("-h", "--help") or argv == ["help"]:
        print(usage())
        return 0
    asked_help = argv[0] == "help" or any(a in ("-h", "--help") for a in argv)
    if asked_help:
        argv = [a for a in argv[1 if argv[0] == "help" else 0:] if a not in ("-h", "--help")]
    try:
        cmd, words, recipe, overrides, _ = split_args(argv)
        module = importlib.import_module(cmd.module)
        if asked_help:
            from sm70.help import command_help

            print(command_help(words, cmd, getattr(module, cmd.config)))
            return 0
        from sm70.config import load_config

        config = load_config(getattr(module, cmd.config), recipe, overrides)
        result = getattr(module, cmd.function)(config)
    except Sm70Error as e:
        print(f"sm70: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sm70: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
