"""The audit chain: concurrent writers keep it consistent; edits, removals and truncation are caught."""

import json
import threading

import pytest

from sm70.cli import main
from sm70.serve.audit import AuditLog


def write_log(path, n=12):
    log = AuditLog(path)
    threads = [threading.Thread(target=lambda i=i: log.write({"endpoint": "POST /v1/completions", "i": i}))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    return path.read_text().splitlines()


def test_concurrent_writes_make_one_intact_chain(tmp_path, capsys):
    lines = write_log(tmp_path / "audit.log")
    assert len(lines) == 12 and sorted(json.loads(x)["i"] for x in lines) == list(range(12))
    assert main(["audit", "verify", str(tmp_path / "audit.log")]) == 0
    assert "12 lines, chain intact" in capsys.readouterr().out


def test_reopening_continues_the_chain(tmp_path):
    write_log(tmp_path / "audit.log", 3)
    write_log(tmp_path / "audit.log", 3)
    assert main(["audit", "verify", str(tmp_path / "audit.log")]) == 0


@pytest.mark.parametrize("tamper, bad_line", [
    (lambda lines: lines.__setitem__(4, lines[4].replace('"i": ', '"i": 1')), 5),   # edit a field
    (lambda lines: lines.pop(4), 5),                                                    # remove a line
    (lambda lines: lines.insert(2, lines[7]), 3),                                       # replay a line
    (lambda lines: lines.__setitem__(11, lines[11][:-5]), 12),                          # damage the last
])
def test_tampering_is_detected_at_the_first_bad_line(tmp_path, capsys, tamper, bad_line):
    path = tmp_path / "audit.log"
    lines = write_log(path)
    tamper(lines)
    path.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(path)]) == 1
    assert f"audit.log:{bad_line}:" in capsys.readouterr().out


def test_truncation_is_caught_with_the_recorded_head(tmp_path, capsys):
    path = tmp_path / "audit.log"
    lines = write_log(path)
    main(["audit", "verify", str(path)])
    head = capsys.readouterr().out.split("head ")[1].strip()
    path.write_text("\n".join(lines[:-1]) + "\n")
    assert main(["audit", "verify", str(path)]) == 0       # a shorter chain is still a chain...
    assert main(["audit", "verify", str(path), f"head={head}"]) == 1   # ...but not the recorded one


def test_missing_log_is_a_clear_error(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nope.log")]) == 2
    assert "audit log not found" in capsys.readouterr().err
