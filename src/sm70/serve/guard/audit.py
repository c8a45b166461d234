"""The audit log: JSON lines in a keyed chain (see `chain`), and `sm70 audit verify LOG key=FILE`.

A line is written with one `write` on an O_APPEND descriptor and fsync'd before the response's
first byte leaves, so even SIGKILL leaves only whole lines, and an answer nobody recorded is never
sent: when a line cannot be written and synced the write raises `AuditUnavailable`, the request
fails with 503, and `/ready` says why until a write succeeds again. A short write (a full disk) is
cut back so the file never keeps half a line. A stream gets a second line when it ends, written
before its `[DONE]` leaves and synced just after (`append`, then `sync`): the answer is on record
from its first byte, and its end costs the client no wait on the disk.

Syncs are shared: one `fsync` makes durable every line written before it, so requests whose lines
arrive while another's sync runs wait for one more sync in all, not one each (group commit).

Rotation: before each write the log checks that its path still names the file it holds open. When
logrotate (or an operator) moved, deleted or truncated it, or on SIGHUP, it reopens the path and
carries the chain on: the new file's first line says `"continues": true` and its `prev` is the old
file's last mac.

The log may hold scrubbed prompts and answers, so a file that group or other may read or write is
refused: at start, on every reopen (logrotate's `create` must say 0600) and when its mode changes
while it is held, the write fails (503) until `chmod 600` fixes it.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from sm70.config import Config
from sm70.errors import Sm70Error
from sm70.serve.guard import chain
from sm70.serve.guard.chain import GENESIS, ChainKey

log = logging.getLogger("sm70.serve")
TAIL_BLOCK = 1 << 16


class AuditUnavailable(Exception):
    """A line could not be written and synced; the request must not be answered."""


@dataclass
class AuditRecord:
    """What the handlers learn about one request, for its audit line(s)."""

    user: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str | None = None
    prompt: str | None = None                       # raw text, kept only when content is audited
    completion: list[str] | None = None             # streamed parts, joined (and scrubbed) when written
    upstream: str | None = None                     # upstream mode: the engine (host:port) that answered
    rag_index: str | None = None                    # rag=: the index's fingerprint
    rag_chunks: list[int] | None = None             # rag=: the chunks cited (numbers in that index), never their text
    rag_top_score: float | None = None              # rag=: the best BM25 score, which rag_min_score is checked against
    cancel: Callable[[], None] | None = field(default=None, repr=False)
    # set by the gate when the key has a tpm: the service holds the request's most tokens against it
    # once it knows them (raises limits.TokensRefused)
    reserve: Callable[[int], Awaitable[None]] | None = field(default=None, repr=False)
    # what the key's tpm is charged when that is not prompt + completion as recorded (upstream mode:
    # sm70's own count where the engine's usage is missing or not counts)
    tokens_charged: int | None = None

    def fields(self) -> dict:
        extra = {"upstream": self.upstream} if self.upstream else {}
        if self.rag_index is not None:
            extra.update(rag_index=self.rag_index, rag_chunks=self.rag_chunks, rag_top_score=self.rag_top_score)
        return {"user": self.user, "model": self.model, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, **extra}


class AuditLog:
    def __init__(self, path: Path, key: ChainKey):
        self.path = Path(path)
        self.key = key
        self.error: str | None = None       # why the last write failed; None while healthy
        self._lock = threading.Lock()       # the chain and the file: one line at a time
        self._sync_lock = threading.Lock()  # one fsync at a time; the descriptor is not swapped under it
        self._written = 0                   # lines written by this process, in order (`append`'s numbers)
        self._synced = 0                    # of those, the lines an fsync has made durable
        self._sync_failed = 0               # lines an fsync failed for: never reported durable
        self._bad = 0                       # lines written when a write or sync last failed
        self._fd: int | None = None
        self._prev = GENESIS
        self._continues = False
        self._broken: str | None = None     # a partial line could not be cut back: no more writes
        self.reopen_requested = False       # set by the SIGHUP handler; acted on by the next write
        self._attach(carried=None)

    # -- opening -------------------------------------------------------------------------------
    def _attach(self, carried: str | None) -> None:
        """Open the path and continue its chain; `carried` is the mac the previous file ended with."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise Sm70Error(f"audit_log: cannot open {self.path} for appending: {e.strerror}") from None
        try:
            _check_private(self.path, os.fstat(fd))
        except Sm70Error:
            os.close(fd)
            raise
        try:
            last = _last_line(fd)
        except OSError as e:
            os.close(fd)
            raise Sm70Error(f"audit_log: cannot read {self.path}: {e.strerror}") from None
        if last is None:
            prev, continues = (carried, True) if carried not in (None, GENESIS) else (GENESIS, False)
        else:
            prev, continues = self._check_last(last, fd), False
        with self._sync_lock:   # what the old file holds is synced before it is let go
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                    self._synced = self._written
                except OSError:
                    self._sync_failed = self._bad = self._written
                os.close(self._fd)
            self._fd, self._prev, self._continues = fd, prev, continues

    def _check_last(self, last: bytes, fd: int) -> str:
        entry = chain.parse(last) if last.endswith(b"\n") else None
        where = f"{self.path}:{_count_lines(fd)}"
        fix = (f"move {self.path} aside (keep it: `sm70 audit verify` it) and start with a new log, "
               f"or pass audit_log= another file")
        if entry is None:
            os.close(fd)
            raise Sm70Error(f"audit_log: {where}: the last line is not a whole JSON object (cut by a crash "
                            f"or a full disk?); {fix}")
        if entry.get("key_id") != self.key.id or entry.get("mac") != chain.line_mac(self.key, entry):
            os.close(fd)
            raise Sm70Error(f"audit_log: {where}: the last line was not written with this audit key "
                            f"({self.key.source}, id {self.key.id}); use the key it was written with, or {fix}")
        return entry["mac"]

    def _follow_rotation(self) -> None:
        try:
            on_path = os.stat(self.path)
        except FileNotFoundError:
            on_path = None
        held = os.fstat(self._fd)
        _check_private(self.path, held)
        moved = on_path is None or (on_path.st_dev, on_path.st_ino) != (held.st_dev, held.st_ino)
        truncated = held.st_size == 0 and self._prev != GENESIS and not self._continues
        if moved or truncated or self.reopen_requested:
            self.reopen_requested = False
            self.reopen()

    def reopen(self) -> None:
        """Start writing to whatever file the path names now (SIGHUP, or a rotation seen)."""
        old = self.path
        self._attach(carried=self._prev)
        log.info("audit log reopened: %s (chain continues from %s)", old, self._prev[:16])

    # -- writing -------------------------------------------------------------------------------
    def write(self, entry: dict) -> None:
        """Append one entry, chained to the previous one; durable when this returns."""
        self.sync(self.append(entry))

    def append(self, entry: dict) -> int:
        """Append one entry, chained to the previous one, not yet synced; its number for `sync`."""
        with self._lock:
            try:
                self._write(entry)
            except (OSError, Sm70Error) as e:
                self._bad = self._written
                self._failed(getattr(e, "strerror", None) or str(e))
            self._written += 1
            return self._written

    def sync(self, line: int) -> None:
        """Return once line number `line` (from `append`) is durable; raises AuditUnavailable."""
        with self._sync_lock:
            if self._synced < line:
                upto, fd = self._written, self._fd
                try:
                    os.fsync(fd)
                except OSError as e:
                    # after a failed fsync Linux may report the next one clean with the data lost:
                    # the lines it covered are never reported durable
                    self._sync_failed = self._bad = upto
                    self._failed(e.strerror)
                self._synced = upto
            if line <= self._sync_failed:
                raise AuditUnavailable(self.error or f"audit log {self.path}: a sync failed")
            healthy = self._synced > self._bad   # a line written since the last failure is durable
        if healthy and self.error is not None:
            log.warning("audit log %s is writable again; serving resumes", self.path)
            self.error = None

    def _failed(self, why: str):
        message = f"audit log {self.path}: {why}"
        if self.error != message:
            log.error("%s; requests are refused with 503 until it can be written", message)
        self.error = message
        raise AuditUnavailable(message) from None

    def _write(self, entry: dict) -> None:
        if self._broken:
            raise Sm70Error(self._broken)
        self._follow_rotation()
        if self._continues:
            entry = {**entry, "continues": True}
        line, mac = chain.seal(self.key, entry, self._prev)
        size = os.fstat(self._fd).st_size
        written = os.write(self._fd, line)
        if written != len(line):
            try:
                os.ftruncate(self._fd, size)   # never leave half a line for the next one to follow
            except OSError:
                self._broken = (f"a partial line at byte {size} could not be removed; move the log aside "
                                f"and restart")
            raise OSError(0, "short write: the disk is full or the file size limit is reached")
        # the line is in the file now, so the chain moves on even if its sync fails
        self._prev, self._continues = mac, False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _check_private(path: Path, st: os.stat_result) -> None:
    if st.st_mode & 0o077:
        raise Sm70Error(f"audit_log: {path} is readable or writable by group/other (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}` (with logrotate: `create 0600`)")


def _last_line(fd: int) -> bytes | None:
    """The file's last line (with its newline, if any), read backwards from the end."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    end, tail = size, b""
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        body = tail[:-1]
        if b"\n" in body or end == 0:
            return tail[body.rfind(b"\n") + 1:]
        if len(tail) > chain.MAX_LINE:
            return tail[-chain.MAX_LINE:]
    return tail


def _count_lines(fd: int) -> int:
    """The number of the file's last line (for error messages only: it reads the whole file)."""
    n, offset, last = 0, 0, b""
    while block := os.pread(fd, 1 << 20, offset):
        n, offset, last = n + block.count(b"\n"), offset + len(block), block[-1:]
    return n + (offset > 0 and last != b"\n")


class VerifyConfig(Config):
    log: Path
    key: Path | None = None     # the server's audit_key; default: $SM70_AUDIT_KEY, else audit.key beside the log
    head: str | None = None     # a mac printed by an earlier verify: lines up to it must be unchanged


def default_key_path(log_path: Path) -> Path:
    return log_path.parent / "audit.key"


def verify(cfg: VerifyConfig) -> int:
    if not cfg.log.is_file():
        raise Sm70Error(f"{cfg.log}: audit log not found")
    key = chain.load_key(cfg.key or default_key_path(cfg.log))
    report = chain.check(cfg.log, key, cfg.head)
    if report.problem:
        print(f"BROKEN {report.problem}")
        return 1
    if cfg.head is not None and report.head_line is None:
        print(f"BROKEN {cfg.log}: head: no line has the recorded head {cfg.head} (lines were removed from the "
              f"end, or it is another log); the chain is intact for its {report.lines} lines")
        return 1
    summary = f"OK {cfg.log}: {report.lines} lines, chain intact (key {key.id})"
    if report.head_line is not None:
        after = report.lines - report.head_line
        summary += f", lines 1-{report.head_line} end at the recorded head, {after} written after it"
    if report.continues:
        summary += f", continues a previous file (verify it with head={report.continues})"
    print(f"{summary}, head {report.head}")
    return 0
