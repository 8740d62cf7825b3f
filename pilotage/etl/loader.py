"""Loading drops: read → validate → merge → quarantine → audit.

A load runs in one write session of the warehouse (see warehouse/store.py):
nothing is visible to readers until every drop of the run is applied, and a
crash at any point leaves the published warehouse as it was.

Drops are loaded in date order, in chunks of several drops at once: a
backlog of a year of drops is a few vectorised passes, not hundreds of small
ones. Each chunk is one transaction. Drops that cannot be loaded at all
(incomplete, unreadable) are refused before their chunk is applied and only
the audit records them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Iterable

import duckdb
import pyarrow as pa

from pilotage.etl import merge
from pilotage.etl.drop import Drop, DropRefused, drop_date, find_drops, inspect_drop, read_control_fingerprint
from pilotage.etl.quarantine import gather_rejects, store_rejects
from pilotage.etl.spec import CONTRACTS, ENVELOPES, FILES, PRESCRIPTIONS
from pilotage.etl.stage import build_line_maps, stage_chunk
from pilotage.etl.validate import typed_table
from pilotage.warehouse import Warehouse



def _chunk_bytes() -> int:
    """How much CSV one chunk takes: a chunk's work tables peak at about 3.5 times its CSV, so a
    tenth of the memory, between 256 MiB and 2 GiB. Fewer, larger chunks are faster: a contract
    updated in several chunks has its current row rewritten each time (a year of drops at
    scale 4, 1.7 GiB, loads in 46 s as one chunk, 52 s as three)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        memory = 8 * 2**30
    return max(256 * 2**20, min(2 * 2**30, memory // 10))


CHUNK_BYTES = _chunk_bytes()
# Up to this much CSV, a load changes the warehouse in place (readers wait for
# it); above, it works on a copy (readers go on) — see warehouse/store.py.
IN_PLACE_BYTES = 64 * 1024 * 1024
CRASH_ENV = "PILOTAGE_CRASH_AT"  # fault injection for the tests: a step name


@dataclass(frozen=True)
class FileOutcome:
    file: str
    read: int = 0
    loaded: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: int = 0
    held: int = 0


@dataclass(frozen=True)
class DropOutcome:
    date: date | None  # None for a refused folder not named after a date
    path: Path
    outcome: str  # loaded | skipped | refused
    message: str | None = None
    files: tuple[FileOutcome, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    def summary(self) -> str:
        """One line for the terminal."""
        if self.outcome == "skipped":
            return f"{self.date} skipped: already loaded ({self.path})"
        if self.outcome == "refused":
            return f"{self.date or self.path.name} REFUSED: {self.message} ({self.path})"
        parts = []
        for f in self.files:
            detail = [f"{f.loaded} new"]
            detail += [f"{n} {label}" for n, label in ((f.unchanged, "unchanged"), (f.stale, "stale"),
                                                       (f.held, "held"), (f.rejected, "rejected")) if n]
            parts.append(f"{f.file.removesuffix('.csv')} {f.read} ({', '.join(detail)})")
        return f"{self.date} loaded: " + "; ".join(parts)


@dataclass
class LoadResult:
    drops: list[DropOutcome] = field(default_factory=list)
    released_payments: int = 0

    @property
    def refused(self) -> list[DropOutcome]:
        return [d for d in self.drops if d.outcome == "refused"]

    @property
    def ok(self) -> bool:
        return not self.refused


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os._exit(70)


def load_drops(
    warehouse: Warehouse,
    paths: Iterable[str | os.PathLike],
    *,
    wait: float = 0.0,
    on_drop: Callable[[DropOutcome], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    in_place: bool | None = None,
) -> LoadResult:
    """Load the drops found under `paths` into `warehouse`.

    on_drop is called with each drop's outcome, on_progress with a number of
    drops done (for a progress bar over `len(find_drops(paths))`). in_place:
    change the warehouse in place (True) or through a copy (False); by default
    in place for small loads (see warehouse/store.py).
    """
    result = LoadResult()

    def report(outcome: DropOutcome) -> None:
        result.drops.append(outcome)
        if on_drop:
            on_drop(outcome)

    drop_paths = find_drops([Path(p) for p in paths])
    candidates = _not_yet_loaded(warehouse, drop_paths, report, on_progress)
    if not candidates:
        return result
    if in_place is None:
        in_place = warehouse.exists() and sum(_size(p) for p in candidates) <= IN_PLACE_BYTES
    with warehouse.write(wait=wait, in_place=in_place) as con:
        loaded = _loaded_fingerprints(con)
        # the drops are inspected (hashed, mostly) by two threads running ahead of the loading:
        # hashlib and numpy release the GIL, so the hashing of later drops overlaps a chunk's SQL
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            checked = zip(candidates, pool.map(_inspect, candidates))
            for chunk in _chunks(_to_load(con, checked, loaded, report, on_progress), chunk_bytes):
                outcomes, released = _load_chunk(con, chunk)
                result.released_payments += released
                for outcome in outcomes:
                    report(outcome)
                _progress(on_progress, len(chunk))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        _crash_point("before_publish")
    result.drops.sort(key=lambda d: (d.date or date.min, str(d.path)))
    return result


def _to_load(con, checked, loaded: set[tuple[date, str]], report, on_progress) -> Iterable[Drop]:
    """The inspected drops to load, in order; refused ones recorded, those already loaded skipped."""
    for path, item in checked:
        if isinstance(item, DropRefused):
            report(_refuse(con, path, item.reason if item.file is None else f"{item.file}: {item.reason}"))
            _progress(on_progress, 1)
        elif (item.date, item.fingerprint) in loaded:
            report(DropOutcome(item.date, path, "skipped"))
            _progress(on_progress, 1)
        else:
            loaded.add((item.date, item.fingerprint))
            yield item


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _progress(callback: Callable[[int], None] | None, n: int) -> None:
    if callback:
        callback(n)


def _inspect(path: Path) -> Drop | DropRefused:
    try:
        return inspect_drop(path)
    except DropRefused as refused:
        return refused


def _not_yet_loaded(warehouse, drop_paths, report, on_progress) -> list[Path]:
    """Drops whose control file does not match a drop already loaded (read-only check)."""
    if not warehouse.exists():
        return list(drop_paths)
    with warehouse.connect() as con:
        loaded = _loaded_fingerprints(con)
    candidates = []
    for path in drop_paths:
        key = read_control_fingerprint(path)
        if key is not None and key in loaded:
            report(DropOutcome(key[0], path, "skipped"))
            _progress(on_progress, 1)
        else:
            candidates.append(path)
    return candidates


def _loaded_fingerprints(con: duckdb.DuckDBPyConnection) -> set[tuple[date, str]]:
    rows = con.sql("SELECT DISTINCT drop_date, fingerprint FROM load_drops WHERE outcome = 'loaded'").fetchall()
    return {(d, fp) for d, fp in rows}


def _chunks(drops: Iterable[Drop], chunk_bytes: int) -> Iterable[list[Drop]]:
    chunk: list[Drop] = []
    size = 0
    for drop in drops:
        if chunk and size + drop.size > chunk_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(drop)
        size += drop.size
    if chunk:
        yield chunk


def _new_load_id(con: duckdb.DuckDBPyConnection) -> int:
    return con.sql("SELECT nextval('load_id_seq')").fetchall()[0][0]


def _new_load_ids(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    """n new load ids in increasing order, drawn in one statement."""
    if not n:
        return []
    return sorted(i for (i,) in con.sql(f"SELECT nextval('load_id_seq') FROM range({n})").fetchall())


def _refuse(con: duckdb.DuckDBPyConnection, path: Path, reason: str, drop: Drop | None = None) -> DropOutcome:
    """Record a refused drop in the audit; nothing else of it is written."""
    when = datetime.now()
    extract = drop.date if drop else drop_date(path)
    fingerprint = drop.fingerprint if drop else ((read_control_fingerprint(path) or (None, ""))[1])
    con.execute(
        "INSERT INTO load_drops VALUES (?, ?, ?, ?, 'refused', ?, ?, ?)",
        [_new_load_id(con), extract, str(path), fingerprint, reason, when, when],
    )
    return DropOutcome(extract, path, "refused", reason)


def _load_chunk(con: duckdb.DuckDBPyConnection, drops: list[Drop]) -> tuple[list[DropOutcome], int]:
    started = datetime.now()
    staged, refused = stage_chunk(con, drops)
    outcomes: dict[int, DropOutcome] = {}
    if refused:
        for seq, reason in refused.items():
            outcomes[seq] = _refuse(con, drops[seq].path, reason, drops[seq])
        gone = [s.file_id for s in staged if s.drop_seq in refused]
        for spec in FILES:
            con.execute(f"DELETE FROM {typed_table(spec)} WHERE _file_id IN (SELECT unnest(?::INTEGER[]))", [gone])
        con.execute("DELETE FROM _structural WHERE file_id IN (SELECT unnest(?::INTEGER[]))", [gone])
        con.execute("DELETE FROM _files WHERE file_id IN (SELECT unnest(?::INTEGER[]))", [gone])
    build_line_maps(con)
    kept = [seq for seq in range(len(drops)) if seq not in refused]
    con.execute("BEGIN TRANSACTION")
    try:
        load_ids = dict(zip(kept, _new_load_ids(con, len(kept))))
        con.register("_drop_load_ids", pa.table({"drop_seq": pa.array(list(load_ids), pa.int32()),
                                                 "load_id": pa.array(list(load_ids.values()), pa.int32())}))
        con.execute("CREATE OR REPLACE TEMP TABLE _drop_loads AS SELECT * FROM _drop_load_ids")
        con.unregister("_drop_load_ids")
        merge.merge_versioned(con, CONTRACTS)
        merge.update_payment_keys(con)
        _crash_point("after_contracts")
        merge.merge_versioned(con, PRESCRIPTIONS)
        merge.merge_versioned(con, ENVELOPES)
        merge.merge_payments(con)
        released = merge.release_held_payments(con) + con.sql(
            "SELECT count(*) FROM _class_payments WHERE _class = 'released'").fetchall()[0][0]
        gather_rejects(con, {str(s.file.path): s.file.line_ends for s in staged})
        store_rejects(con)
        _crash_point("before_commit")
        file_outcomes = _file_outcomes(con, staged)
        finished = datetime.now()
        for seq in kept:
            drop = drops[seq]
            files = tuple(file_outcomes[s.file_id] for s in staged if s.drop_seq == seq)
            outcomes[seq] = DropOutcome(drop.date, drop.path, "loaded", None, files, drop.warnings)
        _audit_loaded(con, [(load_ids[seq], drops[seq], outcomes[seq].files) for seq in kept], started, finished)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return [outcomes[seq] for seq in sorted(outcomes)], released


def _file_outcomes(con: duckdb.DuckDBPyConnection, staged) -> dict[int, FileOutcome]:
    read = dict(
        con.sql(
            "SELECT file_id, sum(n)::BIGINT FROM ("
            + " UNION ALL ".join(f"SELECT _file_id AS file_id, count(*) AS n FROM {typed_table(s)} GROUP BY 1"
                                 for s in FILES)
            + " UNION ALL SELECT file_id, count(*) FROM _structural GROUP BY 1) GROUP BY 1"
        ).fetchall()
    )
    rejected = dict(con.sql("SELECT file_id, count(DISTINCT line) FROM _rejects GROUP BY 1").fetchall())
    classes: dict[int, dict[str, int]] = {}
    for file_id, cls, n in con.sql(
        " UNION ALL ".join(merge.class_counts(s) for s in FILES)
    ).fetchall():
        classes.setdefault(file_id, {})[cls] = n
    outcomes = {}
    for s in staged:
        c = classes.get(s.file_id, {})
        outcomes[s.file_id] = FileOutcome(
            s.file.spec.filename,
            read=read.get(s.file_id, 0),
            loaded=c.get("new", 0),
            unchanged=c.get("unchanged", 0),
            stale=c.get("stale", 0),
            rejected=rejected.get(s.file_id, 0),
            held=c.get("held", 0) + c.get("released", 0),
        )
    return outcomes


def _audit_loaded(con, loaded: list[tuple[int, Drop, tuple[FileOutcome, ...]]], started, finished) -> None:
    """Record the loaded drops and their files in the audit: two inserts for the whole chunk
    (an INSERT per drop and file cost a backlog of 251 drops over a second)."""
    drops = pa.table({
        "load_id": pa.array([load_id for load_id, _, _ in loaded], pa.int32()),
        "drop_date": pa.array([drop.date for _, drop, _ in loaded], pa.date32()),
        "drop_path": pa.array([str(drop.path) for _, drop, _ in loaded], pa.string()),
        "fingerprint": pa.array([drop.fingerprint for _, drop, _ in loaded], pa.string()),
        "message": pa.array(["; ".join(drop.warnings) or None for _, drop, _ in loaded], pa.string()),
    })
    rows = [(load_id, drop, f, {d.spec.filename: d.sha256 for d in drop.files}[f.file])
            for load_id, drop, files in loaded for f in files]
    files = pa.table({
        "load_id": pa.array([load_id for load_id, _, _, _ in rows], pa.int32()),
        "drop_date": pa.array([drop.date for _, drop, _, _ in rows], pa.date32()),
        "file": pa.array([f.file for _, _, f, _ in rows], pa.string()),
        "sha256": pa.array([sha for _, _, _, sha in rows], pa.string()),
        **{f"rows_{name}": pa.array([getattr(f, name) for _, _, f, _ in rows], pa.int64())
           for name in ("read", "loaded", "unchanged", "stale", "rejected", "held")},
    })
    con.register("_audit_drops", drops)
    con.register("_audit_files", files)
    try:
        con.execute(
            "INSERT INTO load_drops SELECT load_id, drop_date, drop_path, fingerprint, 'loaded', message, "
            "$started, $finished FROM _audit_drops ORDER BY load_id", {"started": started, "finished": finished})
        con.execute(
            "INSERT INTO load_files SELECT load_id, drop_date, file, sha256, rows_read, rows_loaded, rows_unchanged, "
            "rows_stale, rows_rejected, rows_held, $started, $finished, 'loaded', NULL FROM _audit_files",
            {"started": started, "finished": finished})
    finally:
        con.unregister("_audit_drops")
        con.unregister("_audit_files")
