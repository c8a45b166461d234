"""The audit chain's cryptography: the secret key, each line's MAC, and checking a file of lines.

Each line carries `key_id`, `prev` (the previous line's `mac`) and `mac`, an HMAC-SHA256 under a
secret key of everything else in the line. Without the key nobody can make a line that checks, so
an edit, a removed, inserted or reordered line breaks the chain where it happened, even if the
hashes around it are recomputed. Lines cut from the end leave a shorter valid chain; that is what
a recorded head (`head=<mac>`) catches.

The key lives outside the log: in `SM70_AUDIT_KEY`, or in a file created 0600 (refused when group
or other may read it). Its id, a hash of the key, is in every line, so a verifier can tell "wrong
key" from "edited line".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from sm70.errors import Sm70Error

GENESIS = "0" * 64
KEY_ENV = "SM70_AUDIT_KEY"
MAX_LINE = 64 << 20     # a line holds at most two scrubbed 4 MiB texts; anything longer is not ours


@dataclass(frozen=True)
class ChainKey:
    secret: bytes
    id: str
    source: str

    @classmethod
    def of(cls, secret: bytes, source: str) -> "ChainKey":
        if len(secret) < 32:
            raise Sm70Error(f"{source}: the audit key is {len(secret)} bytes; use at least 32 "
                            f"(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        kid = hashlib.sha256(b"sm70-audit-key-id:" + secret).hexdigest()[:16]
        return cls(secret, kid, source)


def load_key(path: Path, create: bool = False) -> ChainKey:
    """The key from SM70_AUDIT_KEY if set, else from `path` (created 0600 when `create`)."""
    if os.environ.get(KEY_ENV):
        return ChainKey.of(os.environ[KEY_ENV].strip().encode(), KEY_ENV)
    if not path.exists():
        if not create:
            raise Sm70Error(f"key: {path} not found; pass key=FILE (the server's audit_key) or set {KEY_ENV}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # private from the first byte
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except FileExistsError:
            pass   # another process created it first: use theirs
        except OSError as e:
            raise Sm70Error(f"audit_key: cannot create {path}: {e.strerror}") from None
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise Sm70Error(f"audit_key: {path} is readable or writable by group/other (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
        secret = path.read_bytes().strip()
    except OSError as e:
        raise Sm70Error(f"audit_key: cannot read {path}: {e.strerror}") from None
    return ChainKey.of(secret, str(path))


def canonical(entry: dict) -> bytes:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def line_mac(key: ChainKey, entry: dict) -> str:
    return hmac.new(key.secret, canonical(entry), hashlib.sha256).hexdigest()


def seal(key: ChainKey, entry: dict, prev: str) -> tuple[bytes, str]:
    """The line to append for `entry` after a line whose mac is `prev`, and its own mac."""
    entry = {**entry, "key_id": key.id, "prev": prev}
    entry["mac"] = line_mac(key, entry)
    # ASCII-only: a lone surrogate in a prompt cannot make the line unencodable or unreadable
    return json.dumps(entry, ensure_ascii=True).encode() + b"\n", entry["mac"]


def parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


@dataclass
class Report:
    lines: int = 0
    head: str = GENESIS            # the last good line's mac
    problem: str | None = None     # names the first bad line
    continues: str | None = None   # the previous file's head, when this file starts mid-chain
    head_line: int | None = None   # where the recorded head was found


def check(path: Path, key: ChainKey, head: str | None = None) -> Report:
    """Walk the file line by line (memory bounded by one line) and stop at the first bad one."""
    report = Report()
    prev = None
    with open(path, "rb") as f:
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                break
            n = report.lines + 1
            where = f"{path}:{n}"
            if len(line) > MAX_LINE:
                report.problem = f"{where}: line over {MAX_LINE >> 20} MiB (not an sm70 audit line)"
                break
            entry = parse(line) if line.endswith(b"\n") else None
            if entry is None:
                report.problem = f"{where}: not a whole JSON object (line damaged, or cut by a crash)"
                break
            if entry.get("key_id") != key.id:
                report.problem = (f"{where}: key_id: written with key {entry.get('key_id')!r}, but the key "
                                  f"given ({key.source}) has id {key.id!r}")
                break
            if not isinstance(entry.get("mac"), str) or not hmac.compare_digest(entry["mac"], line_mac(key, entry)):
                report.problem = f"{where}: mac: does not match the line's content (this line was edited)"
                break
            if prev is None:
                if entry.get("prev") != GENESIS:
                    if entry.get("continues") is not True:
                        report.problem = (f"{where}: prev: the first line does not start a chain "
                                          f"(lines before it were removed)")
                        break
                    report.continues = entry["prev"]
            elif entry.get("prev") != prev:
                report.problem = (f"{where}: prev: does not match line {n - 1}'s mac "
                                  f"(a line before it was removed, inserted or reordered)")
                break
            prev = report.head = entry["mac"]
            report.lines = n
            if head is not None and report.head_line is None and hmac.compare_digest(entry["mac"], head):
                report.head_line = n
    return report
