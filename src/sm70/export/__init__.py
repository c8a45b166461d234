"""Leaving for a device: GGUF export for llama.cpp / Ollama, with the evidence that it is the trained model."""
