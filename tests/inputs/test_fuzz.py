"""Bounded, seeded fuzzing of every file reader (targets.py): valid files in the real layouts,
mutated the ways files break (cut short, bytes flipped, hostile tokens spliced in, spans repeated
or dropped), plus raw bytes. Each reader must return or raise an Sm70Error that names the file.

The long, coverage-guided campaign is `python tests/inputs/targets.py --seconds N` (atheris)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .targets import check, targets  # noqa: E402

# What broken and hostile files hold: bytes of other encodings, byte-order marks, NULs, escapes
# of half a UTF-16 pair, numbers past Python's limit, deep nesting, YAML tabs/aliases/tags, CSV quoting.
TOKENS = [b"\xff", b"\xe9", b"\x8c\x8c", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\\udcff", b"\\ud800", b'"',
          b",", b"\n", b"\r", b"\r\n", b"\t", b"{", b"}", b"[", b"]", b":", b"null", b"true", b"-1", b"1e999",
          b"NaN", b"9" * 4400, b"[" * 3000, b"{\"a\":" * 1500, b"&a ", b"*a", b"!!python/object:os.system ",
          b"<<: ", b"- ", b": ", b"''", b"\x1f\x8b", b"PK\x03\x04", b"PAR1", b"\xf0\x9f\x92\x8a", "\u2028".encode()]


@st.composite
def mutants(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "insert", "replace", "delete", "repeat"]))
        if op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "replace":
            data[pos:pos + draw(st.integers(1, 8))] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 256))] * draw(st.integers(1, 3))
    return bytes(data)


TARGETS = targets()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_reader_keeps_the_contract(target):
    for seed in target.seeds:  # the seeds themselves are good files
        with tempfile.TemporaryDirectory() as folder:
            target.run(seed, Path(folder))

    @settings(max_examples=100, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutants(target.seeds), st.binary(max_size=512)))
    def fuzz(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as folder:
            check(target, data, Path(folder))

    fuzz()
