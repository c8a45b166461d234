"""Models: the tiny test model and loading (base, adapter, 4-bit) through `from_pretrained`."""
