"""No connection out unless the operator allows it (`SM70_ALLOW_HUB=1`).

sm70 runs on machines that hold patient data, so every command starts with the hub libraries
switched to their local caches: huggingface_hub, transformers and datasets, and through them the
`kernels` package, which bitsandbytes' CPU backend asks for `kernels-community/quantization-
bitsandbytes` when it is imported (code downloaded from the hub to run here). Offline, `kernels`
looks in the local cache only; a kernel fetched earlier on a machine that may download is still
used, and without one bitsandbytes keeps its own CPU code.

huggingface_hub reads these switches once, when it is first imported, so `cli.main` calls
`apply()` before it imports any command's module.
"""

from __future__ import annotations

import logging
import os

SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

# Offline is what the operator asked for, so these two warnings say nothing they need to act on:
# (logger, start of the message, a phrase that shows the cause is the offline switch)
EXPECTED = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community", "offline mode"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check", "offline mode"),
)


def hub_allowed() -> bool:
    """The hub is used only when the operator says so; on-site installs default to offline."""
    return os.environ.get("SM70_ALLOW_HUB", "0") == "1"


class _DropExpected(logging.Filter):
    def __init__(self, start: str, cause: str):
        super().__init__()
        self.start, self.cause = start, cause

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(self.start) and self.cause in message)


def apply() -> None:
    """Switch the hub libraries offline for this process and the processes it starts."""
    if hub_allowed():
        return
    for name in SWITCHES:
        os.environ[name] = "1"
    for logger, start, cause in EXPECTED:
        target = logging.getLogger(logger)
        if not any(isinstance(f, _DropExpected) and f.start == start for f in target.filters):
            target.addFilter(_DropExpected(start, cause))


ensure_offline = apply   # the name model.load and the engines call it by
