"""Each model-loading stage (train, evaluation) runs in a process of its own, so the pipeline process
never holds a stage's model: on one GPU, the next stage's 70B load would not fit beside it."""

from __future__ import annotations

import gc
import weakref

import pytest

FAST = ["set.train.set.max_steps=4", "set.train.set.save_steps=4", "set.train.set.eval_steps=4"]


@pytest.mark.slow
def test_the_pipeline_process_holds_no_stage_model(tmp_path, monkeypatch):
    import resource

    import torch
    from transformers import PreTrainedModel

    from sm70.cli import main
    from sm70.pipeline.run import build_stages  # noqa: F401  (imported before the baseline below)

    def live_models() -> list:
        return [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]

    def tensor_elements() -> int:
        return sum(o.numel() for o in gc.get_objects() if isinstance(o, torch.Tensor))

    monkeypatch.chdir(tmp_path)
    gc.collect()
    # Other tests' fixtures may hold models of their own in this process (a shuffled order runs them
    # first): only what the pipeline leaves behind counts.
    existing, tensors_before = weakref.WeakSet(live_models()), tensor_elements()
    gc.disable()  # a collection during the run would hide models kept only by reference cycles
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert main(["demo", f"out={tmp_path / 'demo'}", *FAST]) == 0
        models = [m for m in live_models() if m not in existing]
        tensors = tensor_elements() - tensors_before
    finally:
        gc.enable()
    assert not models, f"{len(models)} model(s) still in the pipeline process"
    assert (tmp_path / "demo" / "report.md").is_file()
    # Only libraries were imported here: no model weights, optimizer state or activations.
    assert tensors < 100_000, tensors
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"pipeline process peak RSS grew by {grew_mib:.0f} MiB")
