"""Per-user API keys: `sm70 keys add NAME keys=FILE [rpm=60] [tpm=20000] [expires=2027-06-30]`,
`sm70 keys revoke NAME keys=FILE`, `sm70 keys list keys=FILE` (never shows a key).

A key reads `sm70-<id>-<secret>`. The file stores, per user, the id, a random salt and the scrypt
hash of the whole key, never the key itself; the id picks the one record to check, so a request
costs one scrypt however many users there are. A key whose id is unknown costs one scrypt too
(against a dummy record), so the answer's timing does not tell which ids exist.

The file is written 0600 from its first byte and refused when group or other may read or write
it. The server re-reads the file when it changes, so a revocation takes effect without a
restart; if the new version cannot be read, requests fail with 503 (`KeysUnavailable`) rather
than falling back to keys that may have been revoked since. A key is refused after the day its
`expires` names (UTC). The server notes each user's last use in `FILE.used` (written at most every
`USED_EVERY_S`), so the keys file itself is only ever written by `sm70 keys`.

Every read-modify-write of either file holds an exclusive `flock` on `FILE.lock`: two `keys add`
run at once both keep their key, and a `keys revoke` that printed "revoked" cannot be undone by
an add that read the file before it. Readers need no lock: each write replaces the file whole.
"""

from __future__ import annotations

import hashlib
import hmac
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

from pydantic import Field

from sm70.atomic import write_json
from sm70.config import Config
from sm70.errors import Sm70Error

log = logging.getLogger("sm70.serve")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN = re.compile(r"^sm70-([0-9a-f]{12})-([A-Za-z0-9_-]{16,128})$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
MAX_KEYS_FILE = 16 << 20
# scrypt takes 16 MiB and tens of ms: a flood of bad keys queues here instead of exhausting memory
_SCRYPT_SLOTS = threading.BoundedSemaphore(2)
_DUMMY = {"salt": "00" * 16, "hash": "00" * 32}
USED_EVERY_S = 30.0


class KeysUnavailable(Sm70Error):
    """The keys file changed on disk and the new version cannot be used."""


class KeysConfig(Config):
    name: str
    keys: Path = Path("keys.json")
    rpm: int | None = Field(None, ge=1, description="requests per minute this key may make (add only)")
    tpm: int | None = Field(None, ge=1, description="prompt + completion tokens per minute (add only)")
    in_flight: int | None = Field(None, ge=1, description="requests this key may have in flight at once (add "
                                  "only; default: the server's key_in_flight)")
    expires: date | None = Field(None, description="last day (UTC) the key works (add only)")


class KeysListConfig(Config):
    keys: Path = Path("keys.json")


def used_path(keys: Path) -> Path:
    return keys.with_name(keys.name + ".used")


@contextlib.contextmanager
def locked(keys: Path):
    """Hold the keys file's lock (`FILE.lock`, 0600) for one read-modify-write of it or its `.used`."""
    keys.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys.with_name(keys.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock


def expired(rec: dict, today: date | None = None) -> bool:
    end = rec.get("expires")
    return bool(end) and (today or datetime.now(timezone.utc).date()) > date.fromisoformat(end)


def hash_key(key: str, salt: bytes) -> str:
    with _SCRYPT_SLOTS:
        return hashlib.scrypt(key.encode(), salt=salt, **SCRYPT).hex()


def check_private(path: Path, st: os.stat_result) -> None:
    """A keys file that others can read leaks the hashes (offline guessing); one they can write
    lets them add a key: both are refused."""
    if st.st_mode & 0o077:
        raise Sm70Error(f"{path}: keys file is readable or writable by group/other (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")


def read_keys(path: Path) -> dict[str, dict]:
    """{name: record}; a missing file is an empty store. Errors name the file, line and field."""
    if not path.exists():
        return {}
    if path.stat().st_size > MAX_KEYS_FILE:
        raise Sm70Error(f"{path}: not an sm70 keys file (over {MAX_KEYS_FILE >> 20} MiB)")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise Sm70Error(f"{path}: byte {e.start}: not UTF-8 ({raw[e.start:e.start + 1]!r}); "
                        f"restore the file from a backup or recreate it with `sm70 keys add`") from None
    except json.JSONDecodeError as e:
        raise Sm70Error(f"{path}:{e.lineno}: column {e.colno}: not valid JSON ({e.msg}; a truncated or "
                        f"hand-edited keys file?)") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise Sm70Error(f"{path}: users: missing or not an object (not an sm70 keys file)")
    for name, rec in users.items():
        if not isinstance(rec, dict):
            raise Sm70Error(f"{path}: users.{name}: not an object (not an sm70 keys file)")
        for field in ("id", "salt", "hash"):
            if not isinstance(rec.get(field), str):
                raise Sm70Error(f"{path}: users.{name}.{field}: missing or not a string (not an sm70 keys file)")
        try:
            bytes.fromhex(rec["salt"])
        except ValueError:
            raise Sm70Error(f"{path}: users.{name}.salt: not hex (not an sm70 keys file)") from None
        for field in ("rpm", "tpm", "in_flight"):
            if rec.get(field) is not None and (type(rec[field]) is not int or rec[field] < 1):
                raise Sm70Error(f"{path}: users.{name}.{field}: not a positive whole number")
        if rec.get("expires") is not None:
            try:
                date.fromisoformat(rec["expires"])
            except (TypeError, ValueError):
                raise Sm70Error(f"{path}: users.{name}.expires: not a date such as 2027-06-30") from None
    return users


def _write_keys(path: Path, users: dict[str, dict]) -> None:
    write_json(path, {"format": "sm70-keys-1", "kdf": {"name": "scrypt", **SCRYPT}, "users": users}, mode=0o600)


def add_key(cfg: KeysConfig) -> int:
    if not NAME.match(cfg.name):
        raise Sm70Error(f"name: {cfg.name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    key_id = secrets.token_hex(6)
    key = f"sm70-{key_id}-{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    record = {"id": key_id, "salt": salt.hex(), "hash": hash_key(key, salt), "revoked": None,
              "rpm": cfg.rpm, "tpm": cfg.tpm, "in_flight": cfg.in_flight,
              "expires": cfg.expires.isoformat() if cfg.expires else None}
    with locked(cfg.keys):   # scrypt ran above: the lock is held for the read and the write only
        users = read_keys(cfg.keys)
        if cfg.name in users and not users[cfg.name].get("revoked"):
            raise Sm70Error(f"{cfg.keys}: name: {cfg.name!r} already has a key (revoke it first)")
        users[cfg.name] = {**record, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_keys(cfg.keys, users)
    print(key)  # shown once: only its salted hash is kept
    return 0


def list_keys(cfg: KeysListConfig) -> int:
    users = read_keys(cfg.keys)
    try:
        used = json.loads(used_path(cfg.keys).read_text())
    except (FileNotFoundError, ValueError):
        used = {}
    rows = [("name", "created", "expires", "rpm", "tpm", "in flight", "last use", "state")]
    for name, rec in users.items():
        state = "revoked " + rec["revoked"] if rec.get("revoked") else "expired" if expired(rec) else "active"
        rows.append((name, rec.get("created") or "-", rec.get("expires") or "never", str(rec.get("rpm") or "-"),
                     str(rec.get("tpm") or "-"), str(rec.get("in_flight") or "-"), used.get(name, "never") if isinstance(used, dict) else "?", state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def revoke_key(cfg: KeysConfig) -> int:
    with locked(cfg.keys):
        users = read_keys(cfg.keys)
        if cfg.name not in users:
            raise Sm70Error(f"{cfg.keys}: name: no user {cfg.name!r}")
        users[cfg.name]["revoked"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_keys(cfg.keys, users)
    print(f"revoked {cfg.name}")
    return 0


class KeyStore:
    """Checks bearer tokens against a keys file, re-reading it when it changes on disk."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._by_id: dict[str, tuple[str, dict]] = {}
        self._verified: dict[str, str] = {}   # sha256(token) -> name, to spare scrypt on every request
        self._records: dict[str, dict] = {}
        self._used: dict[str, str] = {}
        self._used_written = 0.0
        self.problem: str | None = None        # why the file on disk cannot be used now
        self._reload()                         # at start a bad file is an Sm70Error: no server without keys

    @property
    def active(self) -> int:
        self._reload()
        return sum(not expired(rec) for _, rec in self._by_id.values())

    def limits(self, name: str) -> tuple[int | None, int | None]:
        rec = self._records.get(name, {})
        return rec.get("rpm"), rec.get("tpm")

    def in_flight(self, name: str) -> int | None:
        """The key's own in-flight limit; None: the server's default."""
        return self._records.get(name, {}).get("in_flight")

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode) if st else None
        with self._lock:
            if stamp == self._stamp:
                return
            if st is not None:
                check_private(self.path, st)
            users = read_keys(self.path)
            self._by_id = {r["id"]: (name, r) for name, r in users.items() if not r.get("revoked")}
            self._records = {name: r for name, r in self._by_id.values()}
            self._verified = {}
            self._stamp = stamp

    def known(self, token: str | None) -> str | None:
        """The key's user name when this is cheap to tell (one `stat`, no scrypt, no file written):
        the key was verified since the keys file last changed, has not expired, and its last use is
        not due to be written. Else None, and `user` (in a thread) decides."""
        if self.path is None or not token:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self._lock:
            name = self._verified.get(digest) if stamp == self._stamp and self.problem is None else None
            if name is None or expired(self._records.get(name, {})) or now - self._used_written >= USED_EVERY_S:
                return None
            self._used[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return name

    def user(self, token: str | None) -> str | None:
        """The key's user name, or None for a missing, unknown, wrong or revoked key.

        Raises KeysUnavailable when the keys file changed and cannot be used."""
        if self.path is None:
            return None
        try:
            self._reload()
        except Sm70Error as e:
            if self.problem != str(e):
                log.error("keys file: %s; requests are refused with 503 until it is fixed", e)
            self.problem = str(e)
            raise KeysUnavailable(str(e)) from None
        if self.problem is not None:
            log.warning("keys file %s is usable again", self.path)
            self.problem = None
        match = TOKEN.match(token or "")
        if match is None:
            return None   # not even shaped like a key: says nothing about which ids exist
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            name = self._verified.get(digest)
            entry = self._by_id.get(match.group(1))
        if name is None:
            name, rec = entry if entry is not None else (None, _DUMMY)
            ok = hmac.compare_digest(hash_key(token, bytes.fromhex(rec["salt"])), rec["hash"])
            if not ok or name is None:
                return None
            with self._lock:
                self._verified[digest] = name
        if expired(self._records.get(name, {})):
            return None
        self._note_use(name)
        return name

    def _note_use(self, name: str) -> None:
        now = time.time()
        with self._lock:
            self._used[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            if now - self._used_written < USED_EVERY_S:
                return
            self._used_written, used = now, dict(self._used)
        path = used_path(self.path)
        try:
            with locked(self.path):
                try:
                    old = json.loads(path.read_text())
                except (FileNotFoundError, ValueError):
                    old = {}
                write_json(path, {**(old if isinstance(old, dict) else {}), **used}, mode=0o600)
        except OSError as e:   # last use is a convenience: never a reason to refuse a request
            log.warning("keys: cannot note last use in %s: %s", used_path(self.path), e.strerror)
