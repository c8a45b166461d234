"""llama.cpp as sm70 uses it: the library (llama-cpp-python, the `sm70[device]` extra), the converter
script of the same llama.cpp source, and the quantizer.

llama-cpp-python's installed package holds the compiled library but not `convert_hf_to_gguf.py`.
Its source release (the sdist the library is built from: PyPI has no Linux CPU wheels) carries both,
under `vendor/llama.cpp/`. `sm70 export converter` unpacks that release's converter, its
`conversion/` package and its own `gguf-py` into `<prefix>/share/sm70/llama.cpp-<version>/`,
where <version> is the installed llama-cpp-python's; `make install` does it from the very sdist it
builds. sm70 looks only there (or in SM70_LLAMA_CPP_CONVERTER), so the file a converter writes is
always one the installed runtime was built to read.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pydantic import Field

from sm70.atomic import atomic_dir
from sm70.config import Config
from sm70.errors import Sm70Error

PACKAGE = "llama-cpp-python"
# The converter's pieces inside the sdist's vendor/llama.cpp/.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")

# Output types by the name users write (llama.cpp's `llama-quantize` names), and llama_ftype values.
QUANTS = {
    "f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15,
    "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30,
}
FLOAT_TYPES = ("f32", "f16", "bf16")  # what the converter writes losslessly from the source dtype


def require() -> object:
    """The llama_cpp module, or a clear error saying how to get it."""
    try:
        import llama_cpp
    except ImportError:
        raise Sm70Error("llama.cpp is not installed: `make install` builds it, or "
                        "pip install 'sm70[device]' (builds llama-cpp-python from source, ~15 min on 2 cores)") from None
    return llama_cpp


def installed_version() -> str:
    return require().__version__


def converter_home(version: str | None = None) -> Path:
    return Path(sys.prefix) / "share" / "sm70" / f"llama.cpp-{version or installed_version()}"


def converter_script() -> Path:
    """The converter of the installed llama.cpp (SM70_LLAMA_CPP_CONVERTER may name another checkout)."""
    override = os.environ.get("SM70_LLAMA_CPP_CONVERTER")
    home = Path(override) if override else converter_home()
    script = home / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise Sm70Error(f"llama.cpp's converter is not at {script}: run `sm70 export converter` (unpacks it from "
                        f"the {PACKAGE}=={installed_version()} source release, the one the library was built from)")
    return script


class ConverterConfig(Config):
    sdist: Path | None = Field(None, description=f"the {PACKAGE} sdist (.tar.gz) the installed library was built "
                               "from; by default pip downloads that version's sdist")


def install_converter(cfg: ConverterConfig) -> Path:
    version = installed_version()
    home = converter_home(version)
    if (home / "convert_hf_to_gguf.py").is_file():
        print(f"llama.cpp converter {version}: {home} (nothing to do)")
        return home
    with tempfile.TemporaryDirectory() as tmp:
        sdist = cfg.sdist or _download_sdist(version, Path(tmp))
        expected = f"llama_cpp_python-{version}.tar.gz"
        if sdist.name != expected:
            raise Sm70Error(f"sdist={sdist}: the installed library is {PACKAGE} {version}; its source is {expected}")
        with tarfile.open(sdist) as tar, atomic_dir(home) as out:
            root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers()
                       if m.name.startswith(root) and m.name[len(root):].split("/")[0] in CONVERTER_PARTS]
            if not any(m.name == root + "convert_hf_to_gguf.py" for m in members):
                raise Sm70Error(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
            for m in members:
                m.name = m.name[len(root):]
            tar.extractall(out, members=members, filter="data")
    print(f"llama.cpp converter {version}: {home}")
    return home


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
           f"{PACKAGE}=={version}", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        raise Sm70Error(f"could not download the {PACKAGE}=={version} sdist: {done.stderr.strip()[-500:]}\n"
                        "give it as sdist=PATH on a machine without the package index")
    return found[0]


def convert(model_dir: Path, out_file: Path, outtype: str, metadata: Path | None = None) -> None:
    """HF directory -> GGUF through llama.cpp's converter, in a subprocess (it imports torch and
    transformers itself and keeps its own gguf-py first on its path)."""
    cmd = [sys.executable, str(converter_script()), str(model_dir), "--outfile", str(out_file), "--outtype", outtype]
    if metadata is not None:
        cmd += ["--metadata", str(metadata)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 and "pre-tokenizer was not recognized" in done.stderr:
        raise Sm70Error(f"{model_dir}: llama.cpp does not know this tokenizer (its converter recognizes a BPE "
                        "tokenizer by the ids it gives a test text, and these match no published model's): the GGUF "
                        "would split text differently from training, so it is not written. Export a model whose "
                        "tokenizer llama.cpp supports (`sm70 model tiny tokenizer=DIR` builds a tiny one)")
    if done.returncode != 0 and "not supported" in done.stderr:
        arch = json.loads((model_dir / "config.json").read_text()).get("architectures")
        raise Sm70Error(f"{model_dir}: llama.cpp's converter does not support the architecture {arch} "
                        "(`python convert_hf_to_gguf.py --print-supported-models` lists what it does)")
    if done.returncode != 0:
        last = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
        raise Sm70Error(f"llama.cpp's converter failed on {model_dir}: " + " | ".join(last)
                        + _disk_hint(out_file.parent))
    if not out_file.is_file():
        raise Sm70Error(f"llama.cpp's converter wrote no {out_file}")


def quantize(src: Path, dst: Path, quant: str, metadata: dict[str, str], threads: int | None = None) -> None:
    """llama.cpp's quantizer (the code behind `llama-quantize`). `metadata` (sm70.* keys, values of
    at most 127 bytes) goes into the output's header as it is written."""
    llama_cpp = require()
    from llama_cpp import _logger  # the binding's log hook: errors only, not 272 lines a file

    _logger.set_verbose(bool(os.environ.get("SM70_VERBOSE")))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads or 0
    overrides = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()  # the last, empty one ends the list
    for slot, (key, value) in zip(overrides, metadata.items()):
        raw = value.encode()
        if len(raw) > 127 or len(key.encode()) > 127:
            raise Sm70Error(f"GGUF metadata {key}: llama.cpp takes at most 127 bytes, got {len(raw)}")
        slot.key = key.encode()
        slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
        slot.value.val_str = raw
    params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0 or not dst.is_file():
        raise Sm70Error(f"llama.cpp's quantizer failed making {quant} from {src} (status {status})"
                        + _disk_hint(dst.parent))


def _disk_hint(folder: Path) -> str:
    free = shutil.disk_usage(folder).free
    return f" ({free / 2**30:.1f} GiB free on {folder}: is the disk full?)" if free < 2**30 else ""


def check_quants(names: list[str]) -> list[str]:
    unknown = [q for q in names if q.lower() not in QUANTS]
    if unknown:
        raise Sm70Error(f"quant={','.join(unknown)}: not a llama.cpp type; known: {', '.join(QUANTS)}")
    if not names:
        raise Sm70Error("quant=: give at least one type, e.g. quant=f16,q8_0,q4_k_m")
    return [q.lower() for q in names]
