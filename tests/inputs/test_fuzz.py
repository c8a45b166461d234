"""Bounded, seeded fuzzing of every file reader (targets.py): valid files in the real layouts,
mutated the ways files break (cut short, bytes flipped, hostile tokens spliced into values, spans
repeated or dropped), plus raw bytes. Each reader must return or raise an Sm70Error that names the file.

A plain seeded mutator rather than hypothesis: hypothesis draws small, early choices most often,
and missed a hostile token that a uniform draw finds in a few dozen tries. The long,
coverage-guided campaign is `python tests/inputs/targets.py --seconds N` (atheris).
"""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path

import pytest

from .targets import check, targets

EXAMPLES = 100  # per target: under a second each here

# What broken and hostile files hold: bytes of other encodings, byte-order marks, NULs, escapes
# of half a UTF-16 pair, numbers past Python's limit, deep nesting, YAML tabs/aliases/tags, CSV quoting.
TOKENS = [b"\xff", b"\xe9", b"\x8c\x8c", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\\udcff", b"\\ud800", b'"',
          b",", b"\n", b"\r", b"\r\n", b"\t", b"{", b"}", b"[", b"]", b":", b"null", b"true", b"-1", b"1e999",
          b"NaN", b"9" * 4400, b"[" * 3000, b"{\"a\":" * 1500, b"&a ", b"*a", b"!!python/object:os.system ",
          b"<<: ", b"- ", b": ", b"''", b"\x1f\x8b", b"PK\x03\x04", b"PAR1", b"\xf0\x9f\x92\x8a", "\u2028".encode()]


# Where a hostile byte survives the syntax and reaches the code behind the parser: just inside a
# JSON string value, a CSV field, a YAML value.
VALUE_STARTS = re.compile(rb'": "|":"|,"|\n"|: ')


def mutant(rnd: random.Random, seeds: list[bytes]) -> bytes:
    if rnd.random() < 0.15:
        return rnd.randbytes(rnd.randrange(512))
    data = bytearray(rnd.choice(seeds))
    for _ in range(rnd.randint(1, 4)):
        pos = rnd.randint(0, len(data))
        op = rnd.choice(["truncate", "insert", "inject", "inject", "replace", "delete", "repeat"])
        if op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = rnd.choice(TOKENS)
        elif op == "inject":
            spots = [m.end() for m in VALUE_STARTS.finditer(data)] or [pos]
            at = rnd.choice(spots)
            data[at:at] = rnd.choice(TOKENS)
        elif op == "replace":
            data[pos:pos + rnd.randint(1, 8)] = rnd.randbytes(rnd.randint(1, 8))
        elif op == "delete":
            del data[pos:pos + rnd.randint(1, 64)]
        else:
            data[pos:pos] = data[pos:pos + rnd.randint(1, 256)] * rnd.randint(1, 3)
    return bytes(data)


TARGETS = targets()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_every_reader_keeps_the_contract(target):
    for seed in target.seeds:  # the seeds themselves are good files
        with tempfile.TemporaryDirectory() as folder:
            target.run(seed, Path(folder))
    rnd = random.Random(target.name)
    for i in range(EXAMPLES):
        data = mutant(rnd, target.seeds)
        with tempfile.TemporaryDirectory() as folder:
            try:
                check(target, data, Path(folder))
            except Exception as e:
                raise AssertionError(f"{target.name} example {i}: {type(e).__name__}: {e}\ninput: {data[:2000]!r}") from e
