import hashlib

from sm70.cli import main


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_tiny_model_is_deterministic_and_loads(tmp_path, tiny_model):
    assert main(["model", "tiny", str(tmp_path / "again")]) == 0
    assert _digest(tmp_path / "again") == _digest(tiny_model)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.model_type == "llama"
    assert model.config.hidden_size % 64 == 0 and model.config.vocab_size % 64 == 0
    ids = tok("Question: What causes anemia?\nA. Iron deficiency\nAnswer: A").input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Question: What causes anemia?\nA. Iron deficiency\nAnswer: A"
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "[INST] hi [/INST]" in chat


def test_tiny_model_loads_in_4bit(tiny_model):
    import bitsandbytes as bnb
    import torch

    from sm70.model.load import load_model, load_tokenizer

    model = load_model(tiny_model, quant="nf4")
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.weight.quant_state.nested  # double quantization
    tok = load_tokenizer(tiny_model)
    with torch.no_grad():
        logits = model(**tok("What is sepsis?", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
