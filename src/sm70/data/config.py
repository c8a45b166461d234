"""The data recipe: sources, cleaning, deduplication, decontamination, mixing."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from sm70.config import Config
from sm70.render import TEMPLATES

FORMATS = ("alpaca", "medqa", "pubmedqa", "usmle")
ALPACA_FIELDS = ("instruction", "input", "output")


class SourceConfig(Config):
    """One input. Exactly one of `path` (local file; `samples://...` for the bundled samples), `hub`
    (a Hugging Face dataset id) or `catalog` (a Medical Meadow subset by name, see `sm70.data.catalog`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # it becomes part of every row id
    path: str | None = None
    hub: str | None = None
    catalog: str | None = None
    split: str = Field("train", description="hub split, or the benchmark split for medqa/pubmedqa files")
    format: Literal["alpaca", "medqa", "pubmedqa", "usmle"] = "alpaca"
    # Column mapping for alpaca-like tables with other names: {instruction: question_col, output: answer_col}.
    columns: dict[Literal["instruction", "input", "output"], Annotated[str, Field(min_length=1)]] = \
        Field(default_factory=dict)
    instruction: str | None = Field(None, description="instruction for benchmark-format rows (default per format)")
    max_rows: int | None = Field(None, ge=1, description="read at most this many rows from the source")
    weight: float = Field(1.0, gt=0, le=1000)  # bounded: a typo like 1e9 would write a billion copies
    licence: str | None = None
    encoding: str = Field("utf-8", description="text encoding of a local .json/.jsonl/.csv table (e.g. cp1252, "
                          "utf-16) when it cannot be re-encoded as UTF-8; benchmark formats are always UTF-8")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}; e.g. utf-8, cp1252, latin-1, utf-16") from None
        return value

    @model_validator(mode="after")
    def _one_location(self):
        given = [k for k in ("path", "hub", "catalog") if getattr(self, k)]
        if len(given) > 1 and given != ["path", "catalog"]:  # catalog + path = that subset from a local file
            raise ValueError(f"source {self.name!r}: give one of path, hub, catalog (got {', '.join(given)})")
        if not given:
            raise ValueError(f"source {self.name!r}: needs a path, a hub id or a catalog name")
        if self.format != "alpaca" and codecs.lookup(self.encoding).name not in ("utf-8", "utf-8-sig"):
            raise ValueError(f"source {self.name!r}: encoding applies to alpaca tables; {self.format} files are UTF-8")
        return self


class DecontamConfig(Config):
    """A benchmark whose test items must not appear in the training set."""

    task: str                      # a task of sm70.eval.tasks: medqa, pubmedqa, usmle_step1..3, usmle
    path: str | None = None        # file or folder in the task's real format; the bundled sample when omitted
    split: str = "test"
    ngram: int = Field(13, ge=3, description="length of the word n-grams compared")
    min_coverage: float = Field(0.3, gt=0, le=1, description="share of a test question's (or abstract "
                                "section's) n-grams a row must contain to count as a copy of it")


class DedupConfig(Config):
    exact: bool = True             # same text after case/punctuation/whitespace normalisation
    near: bool = True              # MinHash/LSH (rensa) over word shingles
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=16, le=4096)  # memory per row grows with it
    shingle: int = Field(5, ge=1)


class DataConfig(Config):
    out: Path = Path("runs/data")
    sources: list[SourceConfig]
    decontaminate: list[DecontamConfig] = Field(default_factory=list)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    template: str = Field("alpaca", description="plain, alpaca, medalpaca, or chat (needs tokenizer)")
    tokenizer: str | None = Field(None, description="count tokens with this tokenizer (and use its chat template)")
    max_tokens: int = Field(2048, ge=1, description="rows longer than this (prompt + completion) are removed")
    target_rows: int | None = Field(None, ge=1, le=10**9, description="mix sources by weight to this many rows")
    val_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**63)  # numpy and the MinHash library take non-negative 64-bit seeds
    on_error: Literal["fail", "skip"] = "fail"
    workers: int = Field(0, ge=0, le=1024, description="processes that examine rows; 0 = the default (one: see parallel.py)")

    @model_validator(mode="after")
    def _check(self):
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dup)}")
        if not self.sources:
            raise ValueError("sources: at least one source is needed")
        if self.template not in (*TEMPLATES, "chat"):
            raise ValueError(f"template: unknown {self.template!r}; use one of {', '.join([*TEMPLATES, 'chat'])}")
        if self.template == "chat" and not self.tokenizer:
            raise ValueError("template 'chat' needs `tokenizer` (the model whose chat template to use)")
        return self
