"""The keyed audit chain: concurrent writers keep it consistent; edits, removals, reordering and
truncation are caught even when the attacker recomputes every hash; rotation carries the chain on."""

import hashlib
import json
import os
import threading

import httpx
import pytest

from sm70.cli import main
from sm70.serve.guard.audit import AuditLog, AuditUnavailable
from sm70.serve.guard.chain import ChainKey, load_key

from .conftest import start_server


def key_for(tmp_path):
    return load_key(tmp_path / "audit.key", create=True)


def write_log(path, n=12):
    log = AuditLog(path, key_for(path.parent))
    threads = [threading.Thread(target=lambda i=i: log.write({"endpoint": "POST /v1/completions", "i": i}))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    return path.read_text().splitlines()


def verify(capsys, path, *extra):
    capsys.readouterr()
    code = main(["audit", "verify", str(path), *extra])
    return code, capsys.readouterr().out


def test_concurrent_writes_make_one_intact_chain(tmp_path, capsys):
    lines = write_log(tmp_path / "audit.log")
    assert len(lines) == 12 and sorted(json.loads(x)["i"] for x in lines) == list(range(12))
    code, out = verify(capsys, tmp_path / "audit.log")
    assert code == 0 and "12 lines, chain intact" in out
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600


def test_a_line_whose_sync_failed_is_never_reported_durable(tmp_path, capsys, monkeypatch):
    """A stream's closing line is appended, then synced (often with others' lines, in one fsync). An
    fsync that fails (a disk error) fails every line it covered, also when a later one succeeds: Linux
    may then report clean with the data lost. The log is healthy again once a newer line is synced."""
    log = AuditLog(tmp_path / "audit.log", key_for(tmp_path))
    log.sync(log.append({"i": 0}))
    one, two = log.append({"i": 1}), log.append({"i": 2})
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 3   # written before they are synced

    def broken(fd):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", broken)
        with pytest.raises(AuditUnavailable, match="Input/output error"):
            log.sync(one)
    assert log.error is not None
    with pytest.raises(AuditUnavailable):
        log.sync(two)                     # covered by the failed fsync, though this one would succeed
    assert log.error is not None
    log.write({"i": 3})
    assert log.error is None
    log.close()
    code, out = verify(capsys, tmp_path / "audit.log")
    assert code == 0 and "4 lines, chain intact" in out


def test_reopening_continues_the_chain(tmp_path, capsys):
    write_log(tmp_path / "audit.log", 3)
    write_log(tmp_path / "audit.log", 3)
    assert verify(capsys, tmp_path / "audit.log")[0] == 0


def forge(lines, i, change):
    """What the review did: edit a line, then recompute the old sha256 chain after it."""
    entries = [json.loads(x) for x in lines]
    change(entries)
    prev = "0" * 64
    for e in entries:
        e["prev"] = prev
        body = {k: v for k, v in e.items() if k not in ("hash", "mac")}
        e["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        prev = e["mac"]
    return [json.dumps(e) for e in entries]


@pytest.mark.parametrize("tamper, bad_line, field", [
    (lambda lines: lines.__setitem__(4, lines[4].replace('"i": ', '"i": 1')), 5, "mac"),   # edit a field
    (lambda lines: lines.pop(4), 5, "prev"),                                                  # remove a line
    (lambda lines: lines.insert(2, lines[7]), 3, "prev"),                                     # replay a line
    (lambda lines: lines.__setitem__(3, lines.pop(5)), 4, "prev"),                            # reorder
    (lambda lines: lines.pop(0), 1, "prev"),                                                  # remove the first
    (lambda lines: lines.__setitem__(11, lines[11][:-5]), 12, "not a whole JSON"),            # damage the last
    # finding: edits with every hash recomputed used to verify as intact
    (lambda lines: lines.__setitem__(slice(None), forge(lines, 4, lambda e: e[4].update(i=99))), 1, "mac"),
    (lambda lines: lines.__setitem__(slice(None), forge(lines, 4, lambda e: e.pop(4))), 1, "mac"),
])
def test_tampering_is_detected_at_the_first_bad_line(tmp_path, capsys, tamper, bad_line, field):
    path = tmp_path / "audit.log"
    lines = write_log(path)
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    code, out = verify(capsys, path)
    assert code == 1 and f"audit.log:{bad_line}: {field}" in out, out


def test_a_line_cut_by_a_crash_is_named(tmp_path, capsys):
    path = tmp_path / "audit.log"
    lines = write_log(path, 4)
    path.write_text("\n".join(lines) + "\n" + lines[0][:30])      # no newline: a torn last write
    code, out = verify(capsys, path)
    assert code == 1 and "audit.log:5: not a whole JSON object" in out


def test_wrong_key_is_told_apart_from_an_edit(tmp_path, capsys, monkeypatch):
    path = tmp_path / "audit.log"
    write_log(path, 3)
    monkeypatch.setenv("SM70_AUDIT_KEY", "x" * 40)
    code, out = verify(capsys, path)
    assert code == 1 and "audit.log:1: key_id: written with key" in out


def test_head_catches_truncation_and_works_on_a_growing_log(tmp_path, capsys):
    path = tmp_path / "audit.log"
    lines = write_log(path)
    head = verify(capsys, path)[1].split("head ")[1].strip()
    log = AuditLog(path, key_for(tmp_path))          # the server goes on writing
    for i in range(3):
        log.write({"i": 100 + i})
    log.close()
    code, out = verify(capsys, path, f"head={head}")
    assert code == 0 and "lines 1-12 end at the recorded head, 3 written after it" in out, out
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert verify(capsys, path)[0] == 0                  # a shorter chain is still a chain...
    code, out = verify(capsys, path, f"head={head}")
    assert code == 1 and "no line has the recorded head" in out   # ...but not the recorded one


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text(p.read_text()[:-20]), "the last line is not a whole JSON object"),
    (lambda p: p.write_text(p.read_text() + '{"x": 1}\n'), "not written with this audit key"),
])
def test_server_refuses_to_append_to_a_damaged_log(tiny_model, tmp_path, capsys, damage, message):
    path = tmp_path / "audit.log"
    write_log(path, 3)
    damage(path)
    assert main(["serve", f"model={tiny_model}", "auth=none", f"audit_log={path}"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and message in err and "Traceback" not in err


def test_insecure_audit_key_is_refused(tmp_path, capsys, tiny_model):
    key = tmp_path / "audit.key"
    key.write_text("k" * 64)
    key.chmod(0o644)
    assert main(["serve", f"model={tiny_model}", "auth=none", f"audit_log={tmp_path / 'a.log'}"]) == 2
    assert "audit.key is readable or writable by group/other" in capsys.readouterr().err


def test_unwritable_log_at_start_is_a_clear_error(tiny_model, tmp_path, capsys):
    """Finding: an unwritable audit log stopped startup with a raw traceback."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "audit.key").write_text("k" * 64)
    (locked / "audit.key").chmod(0o600)
    (locked / "audit.log").mkdir()            # a directory where the file should be: fails even as root
    assert main(["serve", f"model={tiny_model}", "auth=none", f"audit_log={locked / 'audit.log'}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot open {locked / 'audit.log'}" in err and "Traceback" not in err


def test_rotation_reopens_and_carries_the_chain(tiny_model, tmp_path, capsys):
    """Finding: after the live log was moved, lines went to the unlinked file forever."""
    live = start_server(tiny_model, tmp_path)
    body = {"prompt": "Hi", "max_tokens": 2}
    try:
        assert httpx.post(live.url + "/v1/completions", json=body, timeout=60).status_code == 200
        os.rename(live.audit_log, tmp_path / "audit.log.1")                  # logrotate's rename
        assert httpx.post(live.url + "/v1/completions", json=body, timeout=60).status_code == 200
        os.unlink(live.audit_log)                                            # deleted outright
        assert httpx.post(live.url + "/v1/completions", json=body, timeout=60).status_code == 200
        live.app.audit.reopen_requested = True                              # what SIGHUP sets
        assert httpx.post(live.url + "/v1/completions", json=body, timeout=60).status_code == 200
    finally:
        live.stop()
    code, out = verify(capsys, tmp_path / "audit.log.1")
    assert code == 0 and "1 lines" in out
    old_head = out.split("head ")[-1].strip()
    code, out = verify(capsys, live.audit_log)
    assert code == 0 and "2 lines" in out, out                  # the deleted file's line is gone with it
    lines = [json.loads(x) for x in live.audit_log.read_text().splitlines()]
    assert lines[0]["continues"] is True and lines[0]["prev"] != old_head   # it continued the deleted file
    assert "continues" not in lines[1]                          # SIGHUP on the same file: no new start


def test_missing_log_is_a_clear_error(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope.log")]) == 2
    assert "audit log not found" in capsys.readouterr().err


def test_short_keys_are_refused():
    with pytest.raises(Exception, match="at least 32"):
        ChainKey.of(b"short", "test")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_log_others_can_read_is_refused_at_start(tiny_model, tmp_path, capsys, mode):
    """Finding: a world-readable audit log was accepted at start although the README says it is refused."""
    path = tmp_path / "audit.log"
    write_log(path, 2)
    path.chmod(mode)
    assert main(["serve", f"model={tiny_model}", "auth=none", f"audit_log={path}"]) == 2
    err = capsys.readouterr().err
    assert f"{path} is readable or writable by group/other (mode {mode:04o})" in err and "Traceback" not in err


def test_a_log_others_can_read_is_refused_on_reopen(tiny_model, tmp_path):
    live = start_server(tiny_model, tmp_path)
    body = {"prompt": "Hi", "max_tokens": 2}
    post = lambda: httpx.post(live.url + "/v1/completions", json=body, timeout=60)   # noqa: E731
    try:
        assert post().status_code == 200
        os.rename(live.audit_log, tmp_path / "audit.log.1")
        live.audit_log.touch(mode=0o644)                  # logrotate's `create 0644`
        live.audit_log.chmod(0o644)                       # whatever the umask
        assert post().status_code == 503
        ready = httpx.get(live.url + "/ready")
        assert ready.status_code == 503 and "readable or writable by group/other" in str(ready.json())
        live.audit_log.chmod(0o600)
        assert post().status_code == 200
        live.audit_log.chmod(0o640)                       # changed while held
        assert post().status_code == 503
        live.audit_log.chmod(0o600)
        assert post().status_code == 200
    finally:
        live.stop()
    lines = [json.loads(x) for x in live.audit_log.read_text().splitlines()]
    assert [e["status"] for e in lines] == [200, 200] and lines[0]["continues"] is True
