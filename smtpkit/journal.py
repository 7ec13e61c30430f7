"""The campaign journal: a SQLite file that makes a re-run never send twice or lose a row.

One row per message, keyed by ``(campaign, key)`` (the key is the caller's stable row id,
never a position). A message is marked ``sending`` before its bytes go out and
``sent``/``failed``/``deferred`` when its reply arrives, each in its own committed
transaction. So after a crash, a kill or a Stop:

* ``sent`` rows are never sent again;
* ``sending`` rows (the process died between send and reply) become ``unknown``: they
  may have been delivered, so they are not resent unless asked (``resend_unknown``);
* ``pending``, ``deferred`` (a 4xx, retry later) and ``not_attempted`` rows are sent.

The database runs in WAL mode. ``fsync=False`` (the default) is durable across a process
kill, since the WAL is in the OS cache; ``fsync=True`` also survives power loss, at the cost of
one fsync per message.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STATUSES", "Journal", "JournalRow"]

_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one sharing the file

STATUSES = ("pending", "sending", "sent", "failed", "deferred", "unknown", "not_attempted")
SENDABLE = ("pending", "deferred", "not_attempted")  # statuses a run (re)sends

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    campaign   TEXT NOT NULL,
    key        TEXT NOT NULL,
    status     TEXT NOT NULL,
    code       INTEGER,
    enhanced   TEXT,
    text       TEXT,
    message_id TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    updated    REAL NOT NULL,
    PRIMARY KEY (campaign, key)
);
"""


@dataclass(frozen=True)
class JournalRow:
    key: str
    status: str
    code: int | None
    enhanced: str | None
    text: str | None
    message_id: str | None
    attempts: int
    updated: float


class Journal:
    """A SQLite campaign journal (thread-safe; one connection, serialised writes)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")  # senders may share one file
            self._setup(fsync)
        except BaseException:
            self._db.close()
            raise

    def _setup(self, fsync: bool) -> None:
        # Switching a new file to WAL and creating the schema can meet SQLITE_BUSY without the busy
        # handler being consulted (two connections opening the same new file at once, e.g. Dask
        # workers): retry those steps, which are idempotent, until the busy timeout has passed.
        deadline = time.monotonic() + _BUSY_TIMEOUT
        delay = 0.001
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                busy = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # or extended
                if not busy or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def recover(self, campaign: str) -> int:
        """After a crash: rows caught between send and reply become ``unknown``."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE messages SET status='unknown', text=coalesce(text, ?), updated=? "
                "WHERE campaign=? AND status='sending'",
                ("the run stopped after sending, before the reply: may have been delivered", time.time(), campaign),
            )
            return cur.rowcount

    def plan(
        self, campaign: str, keys: Iterable[str], *, resend_unknown: bool = False, retry_failed: bool = False
    ) -> set[str]:
        """Register the campaign's keys; return those still to send (after ``recover``)."""
        keys = [str(k) for k in keys]
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO messages (campaign, key, status, updated) VALUES (?, ?, 'pending', ?)",
            ((campaign, k, now) for k in keys),
        )
        sendable = set(SENDABLE)
        if resend_unknown:
            sendable.add("unknown")
        if retry_failed:
            sendable.add("failed")
        rows = self.rows(campaign)
        return {k for k in keys if rows[k].status in sendable}

    def mark(self, campaign: str, keys: Iterable[str], status: str, *, attempt: bool = False) -> None:
        """Set a status on many rows at once (``attempt`` counts a send attempt)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        now = time.time()
        bump = 1 if attempt else 0
        self._write(
            "UPDATE messages SET status=?, attempts=attempts+?, updated=? WHERE campaign=? AND key=?",
            ((status, bump, now, campaign, str(k)) for k in keys),
        )

    def record(
        self,
        campaign: str,
        key: str,
        status: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
        text: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """The outcome of one message, committed on its own."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self._write(
            "UPDATE messages SET status=?, code=?, enhanced=?, text=?, message_id=coalesce(?, message_id), updated=? "
            "WHERE campaign=? AND key=?",
            [(status, code, enhanced, text, message_id, time.time(), campaign, str(key))],
        )

    def rows(self, campaign: str) -> dict[str, JournalRow]:
        with self._lock:
            cur = self._db.execute(
                "SELECT key, status, code, enhanced, text, message_id, attempts, updated "
                "FROM messages WHERE campaign=?",
                (campaign,),
            )
            return {r[0]: JournalRow(*r) for r in cur.fetchall()}

    def counts(self, campaign: str) -> dict[str, int]:
        with self._lock:
            cur = self._db.execute(
                "SELECT status, count(*) FROM messages WHERE campaign=? GROUP BY status", (campaign,)
            )
            return dict(cur.fetchall())
