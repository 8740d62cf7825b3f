"""The archive of the messages sent: a small SQLite file of its own.

The warehouse (DuckDB) is written only by the loader's write sessions, so the
record of deliveries lives apart, by default in the output folder
(`paths.archive`). One row per delivery of a (kind, period, recipient) --
e.g. ('weekly', '2006-W11', 'caen@example.org') -- with its status:

- `pending`: claimed, being sent, by one run (an `Archive` object: its
  `run_id`, host and process). The same run cannot claim it twice. Another
  run may claim it again when the process that claimed it is gone (a run
  that died); while that process lives, it may not;
- `sent`: delivered (the server's reply, subject, attachments with their
  sha256, the `known_at` of the figures);
- `failed`: refused (the error), may be claimed again by a later run.

`claim` is atomic (a write transaction): of two claims, one wins; a key
already sent is never claimed again, unless `resend=True`, which adds a new
row (a new `generation`) and keeps the earlier ones for `history()`.

A run that dies after the server accepted a
message but before `mark_sent` leaves it pending, and the message is sent
again at the next run: SMTP offers no way to close that window.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 2  # 2: the figures a message carried (`figures`), to tell later revisions

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    period      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    subject     TEXT,
    known_at    TEXT,
    attachments TEXT NOT NULL DEFAULT '[]',
    figures     TEXT,
    message_id  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    claims      INTEGER NOT NULL DEFAULT 1,
    run_id      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    reply       TEXT,
    error       TEXT,
    claimed_at  TEXT NOT NULL,
    sent_at     TEXT,
    updated_at  TEXT NOT NULL,
    UNIQUE (kind, period, recipient, generation)
);
CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status, kind, period);
"""


class ArchiveError(RuntimeError):
    pass


@dataclass(frozen=True)
class ArchivedMessage:
    kind: str
    period: str
    recipient: str
    generation: int
    status: str
    subject: str | None
    known_at: str | None
    attachments: tuple[dict, ...]
    figures: dict | None  # what the message showed, e.g. {"2006-W11": {"entries": 12, ...}}
    message_id: str | None
    attempts: int
    claims: int  # how many runs claimed it (more than 1: resumed after a crash or a failure)
    run_id: str
    reply: str | None
    error: str | None
    claimed_at: str
    sent_at: str | None
    updated_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Archive:
    """The archive file; each `Archive` object is one run (its claims are its own)."""

    def __init__(self, path: str | os.PathLike, run_id: str | None = None):
        self.path = Path(path)
        self.run_id = run_id or uuid.uuid4().hex
        self.host = socket.gethostname()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ArchiveError(f"{self.path}: archive schema {version} is newer than this pilotage "
                                   f"({SCHEMA_VERSION}); upgrade pilotage")
            columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            upgrade = "ALTER TABLE messages ADD COLUMN figures TEXT;" if columns and "figures" not in columns else ""
            db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + upgrade + f"PRAGMA user_version = {SCHEMA_VERSION};")

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise ArchiveError(f"{self.path}: cannot open the archive of sent messages: {exc}") from None
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _write(self):
        """One write transaction (BEGIN IMMEDIATE: the writers queue up, none reads stale state)."""
        with closing(self._connect()) as db:
            try:
                yield db
                if db.in_transaction:
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _latest(db, kind: str, period: str, recipient: str):
        return db.execute("SELECT * FROM messages WHERE kind = ? AND period = ? AND recipient = ? "
                          "ORDER BY generation DESC LIMIT 1", (kind, period, recipient.lower())).fetchone()

    def claim(self, kind: str, period: str, recipient: str, *, resend: bool = False) -> bool:
        """Record (kind, period, recipient) as being sent by this run; True if this run may send it now.

        False when it was already sent (unless `resend`: a new delivery is then
        recorded), when this run already claimed it, or when another live
        process has claimed it. A delivery left pending by a run that died, or
        failed, is claimed again.
        """
        now = _now()
        with self._write() as db:
            db.execute("BEGIN IMMEDIATE")
            row = self._latest(db, kind, period, recipient)
            if row is None or (row["status"] == "sent" and resend):
                generation = 1 if row is None else row["generation"] + 1
                db.execute("INSERT INTO messages (kind, period, recipient, generation, status, run_id, host, pid, "
                           "claimed_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                           (kind, period, recipient.lower(), generation, self.run_id, self.host, os.getpid(),
                            now, now))
                return True
            if row["status"] == "sent":
                return False
            if row["status"] == "pending" and (
                    row["run_id"] == self.run_id
                    or (row["host"] == self.host and row["pid"] != os.getpid() and _alive(row["pid"]))):
                return False
            db.execute("UPDATE messages SET status = 'pending', claims = claims + 1, run_id = ?, host = ?, pid = ?, "
                       "claimed_at = ?, updated_at = ? WHERE id = ?",
                       (self.run_id, self.host, os.getpid(), now, now, row["id"]))
            return True

    def mark_sent(self, kind: str, period: str, recipient: str, *, subject: str | None = None,
                  known_at: str | None = None, attachments: Iterable[Mapping] = (), message_id: str | None = None,
                  attempts: int = 1, reply: str | None = None, figures: Mapping | None = None) -> None:
        """The claimed delivery went through."""
        now = _now()
        self._finish(kind, period, recipient, "status = 'sent', sent_at = ?, error = NULL, figures = ?",
                     [now, None if figures is None else json.dumps(figures, ensure_ascii=False, default=str)],
                     subject, known_at, attachments, message_id, attempts, reply, now)

    def mark_failed(self, kind: str, period: str, recipient: str, error: str, *, subject: str | None = None,
                    known_at: str | None = None, attachments: Iterable[Mapping] = (),
                    message_id: str | None = None, attempts: int = 0, reply: str | None = None) -> None:
        """The claimed delivery was refused; a later run may claim it again."""
        self._finish(kind, period, recipient, "status = 'failed', error = ?", [error],
                     subject, known_at, attachments, message_id, attempts, reply, _now())

    def _finish(self, kind, period, recipient, assignment, values, subject, known_at, attachments, message_id,
                attempts, reply, now) -> None:
        with self._write() as db:
            db.execute("BEGIN IMMEDIATE")
            row = self._latest(db, kind, period, recipient)
            if row is None or row["status"] != "pending" or row["run_id"] != self.run_id:
                state = ("never claimed" if row is None else f"{row['status']}, not pending"
                         if row["status"] != "pending" else "claimed by another run")
                raise ArchiveError(f"{kind} {period} to {recipient}: {state}; claim it first")
            db.execute(f"UPDATE messages SET {assignment}, subject = ?, known_at = ?, attachments = ?, "
                       "message_id = ?, attempts = ?, reply = ?, updated_at = ? WHERE id = ?",
                       [*values, subject, _text(known_at), json.dumps([dict(a) for a in attachments],
                                                                       ensure_ascii=False),
                        message_id, attempts, reply, now, row["id"]])

    def sent(self, kind: str, period: str, recipient: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM messages WHERE kind = ? AND period = ? AND recipient = ? "
                              "AND status = 'sent' LIMIT 1", (kind, period, recipient.lower())).fetchone() is not None

    def history(self, kind: str | None = None, period: str | None = None,
                recipient: str | None = None, status: str | None = None) -> list[ArchivedMessage]:
        """Every delivery recorded (optionally of one kind, period, recipient or status), oldest first."""
        where, args = [], []
        for column, value in (("kind", kind), ("period", period), ("recipient", recipient and recipient.lower()),
                              ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM messages" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with closing(self._connect()) as db:
            rows = db.execute(sql, args).fetchall()
        return [_message(row) for row in rows]


def _text(value) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _message(row: sqlite3.Row) -> ArchivedMessage:
    return ArchivedMessage(
        kind=row["kind"], period=row["period"], recipient=row["recipient"], generation=row["generation"],
        status=row["status"], subject=row["subject"], known_at=row["known_at"],
        attachments=tuple(json.loads(row["attachments"])),
        figures=json.loads(row["figures"]) if row["figures"] else None, message_id=row["message_id"], attempts=row["attempts"],
        claims=row["claims"], run_id=row["run_id"], reply=row["reply"], error=row["error"], claimed_at=row["claimed_at"],
        sent_at=row["sent_at"], updated_at=row["updated_at"])
