"""bitsandbytes' 4-bit layers, held in the layout that training needs.

On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a `Linear4bit` weight into a faster CPU layout
the first time the layer runs in eval mode without gradients (`Linear4bit.forward`), and keeps it:
every later call, training ones too, goes through `gemv_4bit`, which has no autograd kernel. So after
the first validation pass (Trainer's `eval_on_start`) a run's gradients through the frozen base stop
flowing ("autograd kernel was not registered") and its numbers change: a run that validated at start
and one resumed without doing so drift apart. Training turns the repacking off; inference keeps it.
"""

from __future__ import annotations


def keep_training_layout(model) -> int:
    """Stop every 4-bit layer of `model` from repacking its weight for CPU inference; returns how many."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # no bitsandbytes: nothing is 4-bit
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False  # read by Linear4bit.forward before it repacks
    return len(layers)
