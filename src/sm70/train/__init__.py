"""QLoRA fine-tuning: `sft` wires transformers' Trainer + PEFT + bitsandbytes; `plan` predicts memory
before anything heavy loads; `merge` folds an adapter into an unquantized base."""
