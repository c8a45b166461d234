"""Per-user API keys: `sm70 keys add NAME keys=FILE`, `sm70 keys revoke NAME keys=FILE`.

A key reads `sm70-<id>-<secret>`. The file stores, per user, the id, a random salt and the scrypt
hash of the whole key, never the key itself; the id picks the one record to check, so a request
costs one scrypt however many users there are. The server re-reads the file when it changes, so
a revocation takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

from sm70.atomic import write_json
from sm70.config import Config
from sm70.errors import Sm70Error

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class KeysConfig(Config):
    name: str
    keys: Path = Path("keys.json")


def hash_key(key: str, salt: bytes) -> str:
    return hashlib.scrypt(key.encode(), salt=salt, **SCRYPT).hex()


def read_keys(path: Path) -> dict[str, dict]:
    """{name: record}; a missing file is an empty store."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = data["users"]
        for name, rec in users.items():
            for field in ("id", "salt", "hash"):
                if not isinstance(rec.get(field), str):
                    raise ValueError(f"user {name!r}: field {field!r} missing")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise Sm70Error(f"{path}: not an sm70 keys file ({e})") from None
    return users


def _write_keys(path: Path, users: dict[str, dict]) -> None:
    write_json(path, {"format": "sm70-keys-1", "kdf": {"name": "scrypt", **SCRYPT}, "users": users})
    os.chmod(path, 0o600)


def add_key(cfg: KeysConfig) -> int:
    if not NAME.match(cfg.name):
        raise Sm70Error(f"name: {cfg.name!r} must be 1-64 letters, digits, '_', '.', '@' or '-'")
    users = read_keys(cfg.keys)
    if cfg.name in users and not users[cfg.name].get("revoked"):
        raise Sm70Error(f"{cfg.keys}: name: {cfg.name!r} already has a key (revoke it first)")
    key_id = secrets.token_hex(6)
    key = f"sm70-{key_id}-{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    users[cfg.name] = {"id": key_id, "salt": salt.hex(), "hash": hash_key(key, salt),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "revoked": None}
    _write_keys(cfg.keys, users)
    print(key)  # shown once: only its salted hash is kept
    return 0


def revoke_key(cfg: KeysConfig) -> int:
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
        self._reload()

    @property
    def active(self) -> int:
        self._reload()
        return len(self._by_id)

    def _reload(self) -> None:
        if self.path is None:
            return
        stat = self.path.stat() if self.path.exists() else None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None
        with self._lock:
            if stamp == self._stamp:
                return
            users = read_keys(self.path)
            self._by_id = {r["id"]: (name, r) for name, r in users.items() if not r.get("revoked")}
            self._verified = {}
            self._stamp = stamp

    def user(self, token: str | None) -> str | None:
        """The key's user name, or None for a missing, unknown, wrong or revoked key."""
        if not token or self.path is None:
            return None
        self._reload()
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            name = self._verified.get(digest)
            entry = self._by_id.get(token.split("-")[1]) if token.count("-") >= 2 else None
        if name is not None:
            return name
        if entry is None:
            return None
        name, rec = entry
        if not hmac.compare_digest(hash_key(token, bytes.fromhex(rec["salt"])), rec["hash"]):
            return None
        with self._lock:
            self._verified[digest] = name
        return name
