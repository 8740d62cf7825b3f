"""The lake export (`pilotage export PATH`): the star schema as Parquet, Hive-partitioned, kept up to date.

Layout, readable by any engine (DuckDB, Spark, Polars, Trino...)::

    PATH/contracts/year=2006/part-<digest>.parquet      facts: by year of their date
    PATH/contract_versions/year=2006/...                 the version history, likewise
    PATH/payments/year=2006/...                          (paid_date)
    PATH/dim_department/part-<digest>.parquet            dimensions and audit: one file
    PATH/_pilotage_lake.json                             what was exported: a fingerprint per partition

Incremental: each run computes, in one DuckDB pass per table, a fingerprint
(row count and sum of row hashes) of every partition, and rewrites only the
partitions whose fingerprint changed since the last export -- after a daily
load, the current year's (and those a late drop touched). A partition is
replaced by writing its new file under a hidden name (engines skip names
starting with '.'), hiding the old one, then unhiding the new one: a reader
sees the old file or the new one, and at worst, for an instant, neither.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pilotage.jsonfile import read_json, write_json
from pilotage.warehouse import Warehouse

MANIFEST = "_pilotage_lake.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LakeTable:
    name: str
    year: str | None  # the SQL giving a row's partition year; None: one file

    @property
    def partitioned(self) -> bool:
        return self.year is not None


TABLES: tuple[LakeTable, ...] = (
    LakeTable("contracts", "year(start_date)"),
    LakeTable("contract_versions", "year(start_date)"),
    LakeTable("payments", "year(paid_date)"),
    LakeTable("held_payments", None),
    LakeTable("prescriptions", "year(prescribed_date)"),
    LakeTable("prescription_versions", "year(prescribed_date)"),
    LakeTable("envelopes", "year"),
    LakeTable("envelope_versions", "year"),
    LakeTable("dim_department", None),
    LakeTable("dim_measure", None),
    LakeTable("dim_calendar", None),
    LakeTable("load_drops", None),
    LakeTable("load_files", None),
)


@dataclass
class ExportResult:
    path: Path
    written: list[str] = field(default_factory=list)  # partitions (re)written: "contracts/year=2006"
    removed: list[str] = field(default_factory=list)  # partitions gone from the warehouse
    unchanged: int = 0

    def summary(self) -> str:
        return (f"{len(self.written)} partition(s) written, {self.unchanged} unchanged, {len(self.removed)} removed "
                f"-> {self.path}")


def export_lake(warehouse: Warehouse, path: str | os.PathLike, *, full: bool = False,
                progress: Callable[[str], None] | None = None) -> ExportResult:
    """Bring the lake at `path` up to the warehouse's state (everything again with `full`)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST
    manifest = {} if full else read_json(manifest_path)
    if manifest.get("format") not in (None, FORMAT_VERSION):
        raise ValueError(f"{manifest_path}: lake format {manifest.get('format')} is not {FORMAT_VERSION}")
    before: dict[str, str] = manifest.get("partitions", {})
    after: dict[str, str] = {}
    result = ExportResult(root)
    with warehouse.connect() as con:
        for table in TABLES:
            for part, fingerprint, where in _fingerprints(con, table):
                after[part] = fingerprint
                if before.get(part) == fingerprint and any((root / part).glob("part-*.parquet")):
                    result.unchanged += 1
                    continue
                _write(con, table, root / part, where, fingerprint)
                result.written.append(part)
                if progress:
                    progress(part)
    for part in sorted(set(before) - set(after)):
        shutil.rmtree(root / part, ignore_errors=True)
        result.removed.append(part)
    write_json(manifest_path, {"format": FORMAT_VERSION, "partitions": after})
    return result


def _fingerprints(con, table: LakeTable):
    """(partition folder, fingerprint, WHERE clause) of each partition of the table."""
    if not table.partitioned:
        count, digest = con.execute(f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM {table.name} t")\
            .fetchone()
        yield table.name, f"{count}:{digest}", "TRUE"
        return
    rows = con.execute(f"SELECT {table.year} AS y, count(*), sum(hash(t)::HUGEINT) FROM {table.name} t "
                       "GROUP BY y ORDER BY y").fetchall()
    for year, count, digest in rows:
        yield f"{table.name}/year={year}", f"{count}:{digest}", f"{table.year} = {int(year)}"


def _write(con, table: LakeTable, folder: Path, where: str, fingerprint: str) -> None:
    """Replace the partition's file: the new one hidden, the old ones hidden, the new one shown."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}.parquet"
    hidden = folder / f".{name}.tmp"
    columns = "* EXCLUDE (year)" if table.year == "year" else "*"
    con.execute(f"COPY (SELECT {columns} FROM {table.name} WHERE {where}) TO '{_sql(hidden)}' "
                "(FORMAT parquet, COMPRESSION zstd)")
    old = [p for p in folder.glob("part-*.parquet") if p.name != name]
    for path in old:
        os.replace(path, folder / f".{path.name}.old")
    os.replace(hidden, folder / name)
    for path in folder.glob(".*.old"):
        path.unlink()


def _sql(path: Path) -> str:
    return str(path).replace("'", "''")
