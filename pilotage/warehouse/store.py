"""The warehouse file: where it is, how it is read, how it is written.

DuckDB locks a database file per process: while one process holds it
read-write, no other process can even open it read-only, and the reverse.
Readers and writers in different processes are coordinated with two lock
files beside the warehouse:

* `<file>.lock` — one writer at a time (a second load waits or says so);
* `<file>.gate` — readers hold it shared while they have the file open; a
  writer that changes the file in place holds it exclusively;
* `<file>.turnstile` — taken for an instant by each reader on its way to the
  gate, and by an in-place writer until it has the gate: a writer waiting for
  the readers in flight to finish keeps new ones out, so that a busy portal
  (readers overlapping without a pause) cannot starve the daily load.

A write session has two modes:

* **in place** (small loads: a day's drops): the writer closes the gate,
  waits for the readers in flight to finish, applies its changes in one
  transaction and reopens the gate. Readers wait for about as long as the
  load takes (a second or so) and then see the new state.
* **copy** (large loads: a backlog, a migration): the writer copies the file,
  applies its changes to the copy and atomically renames it over the
  published file. Readers are never held up: they read the old state until
  the rename, the new one after; a reader that had the old file open keeps
  its snapshot. Copying costs about a second per 600 MB, which is why daily
  loads are done in place.

Either way a reader sees the state before or after a load, never half of it,
and a crash leaves the warehouse as it was before the interrupted transaction
(DuckDB's own recovery in place; the untouched published file for a copy).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import duckdb

from pilotage.warehouse.reference import refresh_reference
from pilotage.warehouse.schema import SCHEMA_VERSION, current_version, migrate

ENV_VAR = "PILOTAGE_WAREHOUSE"
DEFAULT_PATH = "pilotage.duckdb"
READ_WAIT = 120.0  # seconds a reader waits for an in-place load to finish
GATE_WAIT = 300.0  # seconds an in-place writer waits for the readers in flight


class WarehouseError(Exception):
    """A problem the user can act on (missing file, busy, outdated schema)."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse."""


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    """`path` if given, else $PILOTAGE_WAREHOUSE, else ./pilotage.duckdb."""
    chosen = path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_PATH
    return Path(chosen).expanduser().resolve()


class Warehouse:
    """One DuckDB warehouse file."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = resolve_path(path)

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def gate_path(self) -> Path:
        return self.path.with_name(self.path.name + ".gate")

    @property
    def turnstile_path(self) -> Path:
        return self.path.with_name(self.path.name + ".turnstile")

    @property
    def work_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writing")

    def exists(self) -> bool:
        return self.path.exists()

    # -- reading --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, wait: float = READ_WAIT) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, held open for the `with` block.

        Each call opens the file anew (through a fresh in-memory instance), so
        a long-running process always reads the newest published state. Keep
        the block short: an in-place load waits for it to end.
        """
        if not self.path.exists():
            raise WarehouseError(
                f"no warehouse at {self.path}: load drops first (pilotage load PATH) "
                f"or choose one with --warehouse / {ENV_VAR}"
            )
        with self._gate(exclusive=False, wait=wait):
            con = self._open_read_only()
            try:
                yield con
            finally:
                con.close()

    def _open_read_only(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {_sql_string(str(self.path))} AS wh (READ_ONLY)")
            con.execute("USE wh")
            have = current_version(con)
        except duckdb.Error as exc:
            con.close()
            raise WarehouseError(f"cannot read the warehouse {self.path}: {exc}") from exc
        if have != SCHEMA_VERSION:
            con.close()
            raise WarehouseError(
                f"the warehouse {self.path} is at schema version {have}, this pilotage "
                f"uses {SCHEMA_VERSION}: run `pilotage migrate`"
                if have < SCHEMA_VERSION
                else f"the warehouse {self.path} is at schema version {have}, newer than "
                f"this pilotage ({SCHEMA_VERSION}): upgrade pilotage"
            )
        return con

    # -- writing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self, wait: float = 0.0, in_place: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write session: a read-write connection, migrated, with fresh reference data.

        The body makes its changes in transactions of its own. With a copy
        (the default, and always for a new warehouse) nothing is published
        unless the body completes; in place, each committed transaction stands
        (readers are kept out until the session ends).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(wait):
            _remove(self.work_path)  # a copy left by a crashed session (we hold the lock)
            if in_place and self.path.exists():
                with self._gate(exclusive=True, wait=GATE_WAIT):
                    yield from self._session(self.path, in_place=True)
            else:
                if self.path.exists():
                    shutil.copyfile(self.path, self.work_path)
                yield from self._session(self.work_path, in_place=False)
                self._publish()

    def _session(self, path: Path, in_place: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise WarehouseBusy(f"the warehouse {path} is open in another process: {exc}") from None
        try:
            con.execute("SET enable_progress_bar = false")
            if in_place:
                # DuckDB's checkpoint would also merge ("vacuum") row groups touched by the day's
                # appends: most of a daily load's time (0.5 s of a 23k-row append, against 0.04 s).
                # Readers wait during an in-place load, so leave that to the loads made on a copy.
                con.execute("SET max_vacuum_tasks = 0")
            con.execute("BEGIN TRANSACTION")
            migrate(con)
            refresh_reference(con)
            con.execute("COMMIT")
            yield con
            con.execute("CHECKPOINT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            con.close()
            if not in_place:
                _remove(path)
            raise
        con.close()

    def _publish(self) -> None:
        with open(self.work_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.work_path, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # -- locks ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, wait: float) -> Iterator[None]:
        """One writer at a time."""
        handle = open(self.lock_path, "a+")
        try:
            if not _flock(handle, fcntl.LOCK_EX, wait):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise WarehouseBusy(
                    f"the warehouse {self.path} is being written by {holder}; "
                    "try again when it has finished (or give --wait SECONDS)"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {datetime.now():%Y-%m-%d %H:%M:%S}")
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the flock

    @contextlib.contextmanager
    def _gate(self, exclusive: bool, wait: float) -> Iterator[None]:
        """Readers shared, an in-place writer exclusive; both through the turnstile (see the module's docstring)."""
        try:
            handle = open(self.gate_path, "a+")
            turnstile = open(self.turnstile_path, "a+")
        except OSError:  # a read-only folder: no in-place writer can be there either
            yield
            return
        try:
            try:
                entered = (_through_turnstile_exclusive(turnstile, handle, wait) if exclusive
                           else _through_turnstile_shared(turnstile, handle, wait))
            finally:
                turnstile.close()
            if not entered:
                what = "readers still have it open" if exclusive else "a load is changing it"
                raise WarehouseBusy(f"the warehouse {self.path} is busy ({what}) after {wait:.0f} s")
            yield
        finally:
            handle.close()


def _through_turnstile_exclusive(turnstile, gate, wait: float) -> bool:
    """A writer: hold the turnstile (new readers queue) while the readers in flight drain from the gate."""
    fcntl.flock(turnstile, fcntl.LOCK_EX)  # blocking: readers hold it for an instant only
    try:
        return _flock(gate, fcntl.LOCK_EX, wait)
    finally:
        fcntl.flock(turnstile, fcntl.LOCK_UN)


def _through_turnstile_shared(turnstile, gate, wait: float) -> bool:
    """A reader: pass the turnstile, try the gate, and never hold the turnstile while waiting for the gate
    (that would make every other reader wait too, even those that only want to know a load is running)."""
    deadline = time.monotonic() + wait
    while True:
        fcntl.flock(turnstile, fcntl.LOCK_EX)  # blocking: while a writer waits for the gate, wait behind it
        try:
            fcntl.flock(gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _flock(handle, operation: int, wait: float) -> bool:
    """Take a flock, polling until `wait` seconds have passed; False if it could not."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
