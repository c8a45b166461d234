"""The table a device maker reads to choose a quant: SmolLM2-135M-Instruct, the same 20 chat prompts
(MedQA questions through the model's chat template), the same thread count, for the HF fp32 model
(the transformers path of today's `sm70 serve`) and for each GGUF of an export through llama.cpp.

Per engine: prompt tokens/s (prefill, one prompt at a time), generated tokens/s (greedy, exactly
--new-tokens tokens per prompt, end-of-turn ignored so every engine does the same work), file size,
and the export card's top-1 agreement with the HF model (from export_card.json when the folder has
one, else measured here on the 20 prompts). The last line compares the Q8_0 file with HF fp32.

    python bench/device_infer.py [--export DIR] [--quant f16,q8_0,q4_k_m] [--threads 2] [--new-tokens 32]

Without --export the GGUFs are exported here first (`sm70 export gguf ... verify=false`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def prompts(tokenizer, n: int) -> list[str]:
    from sm70.eval.engine import Setting, build_context
    from sm70.eval.tasks import get_task, load_task

    task = get_task("medqa")
    items = [i for i in load_task("medqa") if i.excluded is None][:n]
    return [build_context(task, item, [], Setting(template="chat"), tokenizer) for item in items]


def bench_hf(model_dir: Path, texts: list[str], new_tokens: int) -> dict:
    import torch

    from sm70.model.load import load_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, quant="none", dtype="float32", device_map={"": "cpu"}).eval()
    prefill = gen = 0.0
    n_prompt = 0
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        n_prompt += ids.shape[1]
        with torch.inference_mode():
            t = time.perf_counter()
            model(input_ids=ids)
            prefill += time.perf_counter() - t
            t = time.perf_counter()
            model.generate(input_ids=ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)
            gen += time.perf_counter() - t
    # generate() also prefills: its generation time is what remains after the prompt
    return {"prompt_tps": n_prompt / prefill, "gen_tps": len(texts) * new_tokens / max(gen - prefill, 1e-9),
            "bytes": sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))}


def bench_gguf(path: Path, texts: list[str], new_tokens: int, threads: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          verbose=False)  # llama.cpp's defaults otherwise: an F16 key/value cache, as on a device
    prefill = gen = 0.0
    n_prompt = 0
    for text in texts:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        n_prompt += len(ids)
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        prefill += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([llm.sample(top_k=1, temp=0.0)])
        gen += time.perf_counter() - t
    llm.close()
    return {"prompt_tps": n_prompt / prefill, "gen_tps": len(texts) * new_tokens / gen, "bytes": path.stat().st_size}


def top1_from_card(folder: Path) -> dict[str, float]:
    card = folder / "export_card.json"
    if not card.is_file():
        return {}
    return {f["file"]: f["logits"]["top1"] for f in json.loads(card.read_text())["files"]}


def top1_here(model_dir: Path, folder: Path, files: list[str], texts: list[str], threads: int) -> dict[str, float]:
    from sm70.config import load_config
    from sm70.eval.llamacpp import GgufModel
    from sm70.export.gguf import ExportConfig
    from sm70.export.verify import Reference, logit_fidelity

    reference = Reference(load_config(ExportConfig, model=str(model_dir), out=str(folder)))
    found = {}
    for name in files:
        gguf = GgufModel(str(folder / name), threads=threads, kv_cache="f16")
        found[name] = logit_fidelity(reference, gguf, texts, 512)["top1"]
        gguf.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--export", help="an export folder (with its card); default: export here")
    parser.add_argument("--quant", default="f16,q8_0,q4_k_m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from sm70.config import load_config
    from sm70.model.load import load_tokenizer

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        from sm70.model.fetch import FetchConfig, fetch

        model_dir = fetch(load_config(FetchConfig, name="smollm2-135m-instruct", out=str(model_dir)))
    texts = prompts(load_tokenizer(model_dir), args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.export) if args.export else Path(tmp) / "export"
        if not args.export:
            from sm70.export.gguf import ExportConfig, export_gguf

            export_gguf(load_config(ExportConfig, model=str(model_dir), out=str(folder), quant=args.quant,
                                    verify=False))
        files = sorted(json.loads((folder / "export.json").read_text())["files"])
        top1 = top1_from_card(folder)
        source = "export card"
        if not top1:
            top1, source = top1_here(model_dir, folder, files, texts, args.threads), f"these {len(texts)} prompts"
        rows = {"HF fp32 (transformers)": bench_hf(model_dir, texts, args.new_tokens)}
        for name in files:
            rows[f"{name} (llama.cpp)"] = bench_gguf(folder / name, texts, args.new_tokens, args.threads)
    print(f"\n{len(texts)} prompts, {args.threads} threads, {args.new_tokens} new tokens each; top-1 agreement "
          f"with the HF model from {source}\n")
    print(f"| engine | size (MiB) | prompt tok/s | generated tok/s | top-1 agreement |\n|---|---|---|---|---|")
    for label, r in rows.items():
        name = label.split(" ")[0]
        agree = f"{100 * top1[name]:.1f}%" if name in top1 else "(reference)"
        print(f"| {label} | {r['bytes'] / 2**20:.0f} | {r['prompt_tps']:.0f} | {r['gen_tps']:.1f} | {agree} |")
    hf = rows["HF fp32 (transformers)"]
    q8 = rows.get("model-q8_0.gguf (llama.cpp)") or list(rows.values())[-1]
    print(f"\ndevice_infer: llama.cpp q8_0 vs HF fp32 on {args.threads} threads: prompt {q8['prompt_tps'] / hf['prompt_tps']:.2f}x, "
          f"generation {q8['gen_tps'] / hf['gen_tps']:.2f}x, {q8['bytes'] / hf['bytes']:.2f}x the size")


if __name__ == "__main__":
    main()
