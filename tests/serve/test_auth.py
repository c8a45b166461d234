"""Keys: printed once, stored as salted scrypt hashes, revocable, checked in constant time."""

import json

import pytest

from sm70.cli import main
from sm70.serve.auth import KeyStore

from .conftest import make_key


def test_add_prints_only_the_key_and_stores_only_a_hash(tmp_path, capsys):
    path = tmp_path / "keys.json"
    assert main(["keys", "add", "carol", f"keys={path}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("sm70-")
    key = out[0]
    stored = path.read_text()
    assert key not in stored and key.split("-", 2)[2] not in stored
    rec = json.loads(stored)["users"]["carol"]
    assert len(bytes.fromhex(rec["salt"])) == 16 and rec["revoked"] is None
    assert (path.stat().st_mode & 0o777) == 0o600
    assert KeyStore(path).user(key) == "carol"


def test_wrong_unknown_and_revoked_keys_are_refused(tmp_path):
    path = tmp_path / "keys.json"
    a, b = make_key(path, "a"), make_key(path, "b")
    store = KeyStore(path)
    assert store.user(a) == "a" and store.user(b) == "b"
    assert store.user(None) is None and store.user("") is None and store.user("garbage") is None
    assert store.user(a[:-1] + ("x" if a[-1] != "x" else "y")) is None     # right id, wrong secret
    assert main(["keys", "revoke", "b", f"keys={path}"]) == 0
    assert store.user(b) is None and store.user(a) == "a"                 # re-read without restart


def test_same_secret_under_two_users_gets_different_hashes(tmp_path):
    path = tmp_path / "keys.json"
    make_key(path, "a")
    make_key(path, "b")
    users = json.loads(path.read_text())["users"]
    assert users["a"]["salt"] != users["b"]["salt"]


@pytest.mark.parametrize("name, message", [("bad name", "must be"), ("a", "already has a key")])
def test_bad_names_are_clear_errors(tmp_path, capsys, name, message):
    path = tmp_path / "keys.json"
    make_key(path, "a")
    assert main(["keys", "add", name, f"keys={path}"]) == 2
    assert message in capsys.readouterr().err


def test_a_damaged_keys_file_names_itself(tmp_path, capsys):
    path = tmp_path / "keys.json"
    path.write_text('{"users": {"x": {"id": 1}}}')
    assert main(["keys", "add", "y", f"keys={path}"]) == 2
    assert "keys.json: not an sm70 keys file" in capsys.readouterr().err
