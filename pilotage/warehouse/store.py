"""The warehouse file: where it is, how it is read, how it is written.

DuckDB locks a database file per process: while one process holds it
read-write, no other process can even open it read-only. A load that wrote
the published file in place would lock out every reader (reports, the
portal) for its whole duration. So the published file is never opened
read-write:

* readers open the published file read-only, any number at once;
* a write session takes an exclusive lock file (one writer at a time), copies
  the published file to a working file beside it, applies its changes there,
  checkpoints, and atomically renames the working file over the published
  one. Readers see the state before or after, never half of it; a reader that
  had the old file open keeps its snapshot. A crash or an error before the
  rename leaves the published file exactly as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import duckdb

from pilotage.warehouse.reference import refresh_reference
from pilotage.warehouse.schema import SCHEMA_VERSION, current_version, migrate

ENV_VAR = "PILOTAGE_WAREHOUSE"
DEFAULT_PATH = "pilotage.duckdb"


class WarehouseError(Exception):
    """A problem the user can act on (missing file, busy, outdated schema)."""


class WarehouseBusy(WarehouseError):
    """Another write session holds the warehouse lock."""


def resolve_path(path: str | os.PathLike | None = None) -> Path:
    """`path` if given, else $PILOTAGE_WAREHOUSE, else ./pilotage.duckdb."""
    chosen = path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_PATH
    return Path(chosen).expanduser().resolve()


class Warehouse:
    """One DuckDB warehouse file."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = resolve_path(path)
        self._shared: duckdb.DuckDBPyConnection | None = None
        self._shared_version: tuple | None = None
        self._shared_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def work_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writing")

    def exists(self) -> bool:
        return self.path.exists()

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the published state.

        Each call opens the file anew (through a fresh in-memory instance), so
        a long-running process sees a newly published file instead of a cached
        instance of the old one.
        """
        if not self.path.exists():
            raise WarehouseError(
                f"no warehouse at {self.path}: load drops first (pilotage load PATH) "
                f"or choose one with --warehouse / {ENV_VAR}"
            )
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

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on a read-only connection kept open between calls.

        The connection is reopened when a load has published a new file
        (another inode), so a long-running process answers from the newest
        state without paying for an open at every query. Close the cursor
        after use; cursors are safe to use one per thread.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self.connect()  # raises the helpful error
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._shared_lock:
            if self._shared is None or self._shared_version != version:
                self._shared = self.connect()
                self._shared_version = version
            cursor = self._shared.cursor()
        cursor.execute("USE wh")  # a cursor starts on the default (in-memory) catalog
        return cursor

    @contextlib.contextmanager
    def write(self, wait: float = 0.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write session: lock, copy, change, publish atomically.

        Yields a read-write connection to the working copy, already migrated
        to the current schema with fresh reference data. If the body raises,
        nothing is published.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(wait):
            _remove(self.work_path)
            if self.path.exists():
                shutil.copyfile(self.path, self.work_path)
            con = duckdb.connect(str(self.work_path))
            try:
                con.execute("BEGIN TRANSACTION")
                migrate(con)
                refresh_reference(con)
                con.execute("COMMIT")
                yield con
                con.execute("CHECKPOINT")
            except BaseException:
                con.close()
                _remove(self.work_path)
                raise
            con.close()
            self._publish()

    def _publish(self) -> None:
        with open(self.work_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.work_path, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @contextlib.contextmanager
    def _lock(self, wait: float) -> Iterator[None]:
        handle = open(self.lock_path, "a+")
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise WarehouseBusy(
                            f"the warehouse {self.path} is being written by {holder}; "
                            "try again when it has finished (or give --wait SECONDS)"
                        ) from None
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {datetime.now():%Y-%m-%d %H:%M:%S}")
            handle.flush()
            yield
        finally:
            handle.close()  # closing releases the flock


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
