"""Where a backlog load spends its time: the loader's steps, timed, and a checksum of the result.

    python3 bench/profile_load.py --scale 4 [--out PATH] [--compare OTHER.duckdb]

Loads the cached drops of bench_load.py into a new warehouse, wrapping the
loader's main steps with timers (cumulative seconds per step, across chunks),
then prints per table its row count and an order-independent checksum of its
content, so that a warehouse loaded before and after a change can be compared.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, drops_for  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)
# the audit's timestamps and load ids differ between any two loads
VOLATILE = {"load_drops": ("started", "finished", "load_id"), "load_files": ("started", "finished", "load_id"),
            "rejects": ("load_id",), "schema_migrations": ("applied_at",)}


def timed(module, name: str) -> None:
    """Wrap module.name so its calls (from the main thread) add to TIMES[name]."""
    inner = getattr(module, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return inner(*args, **kwargs)
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[f"{module.__name__.rsplit('.', 1)[-1]}.{name}"] += time.perf_counter() - started

    setattr(module, name, wrapper)


class TimedConnection:
    """A DuckDB connection whose execute() calls add to SQL[statement head] (with --sql)."""

    def __init__(self, con):
        self._con = con

    def execute(self, query, *args, **kwargs):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return self._con.execute(query, *args, **kwargs)
        finally:
            key = " ".join(query.split())[:80]
            SQL[key] += time.perf_counter() - started
            SQL_CPU[key] += time.process_time() - cpu

    def __getattr__(self, name):
        return getattr(self._con, name)


SQL: dict[str, float] = defaultdict(float)
SQL_CPU: dict[str, float] = defaultdict(float)  # CPU of all the process's threads: steadier on a busy machine


def checksums(path: Path) -> dict[str, tuple[int, int]]:
    """{table: (rows, sum of row hashes)} for every table of the warehouse."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    tables = [t for (t,) in con.sql("SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
    sums = {}
    for table in tables:
        exclude = VOLATILE.get(table, ())
        columns = [c for (c,) in con.sql(f"SELECT column_name FROM information_schema.columns "
                                          f"WHERE table_name = '{table}' ORDER BY ordinal_position").fetchall()
                   if c not in exclude]
        row = ", ".join(f'"{c}"' for c in columns)
        sums[table] = tuple(con.sql(f"SELECT count(*), coalesce(sum(hash({row})::HUGEINT), 0) "
                                    f"FROM {table}").fetchall()[0])
    con.close()
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None, help="a warehouse to compare the result with")
    parser.add_argument("--sql", action="store_true", help="also time each SQL statement")
    parser.add_argument("--chunk-mib", type=int, default=None, help="the loader's chunk size (default: its own)")
    args = parser.parse_args()
    from pilotage.etl import drop, loader, merge, quarantine, stage
    from pilotage.warehouse import Warehouse

    for module, names in ((stage, ("stage_chunk", "build_line_maps")), (drop, ("inspect_drop",)),
                          (merge, ("merge_versioned", "update_payment_keys", "merge_payments",
                                   "release_held_payments")),
                          (loader, ("stage_chunk", "build_line_maps", "gather_rejects", "store_rejects",
                                    "_file_outcomes", "_audit_loaded", "_inspect")),
                          (merge, ("_repeats", "_known_versions", "_remember_earliest_drop"))):
        for name in names:
            timed(module, name)
    for name in ("merge_versioned", "merge_payments", "update_payment_keys", "release_held_payments"):
        setattr(loader.merge, name, getattr(merge, name))
    if args.sql:
        from pilotage.warehouse import store

        session = store.Warehouse._session

        def timed_session(self, path, in_place):
            for con in session(self, path, in_place):
                yield TimedConnection(con)

        store.Warehouse._session = timed_session
    drops = drops_for(args.scale)
    out = args.out or OUT / f"profile-s{args.scale:g}.duckdb"
    for leftover in out.parent.glob(out.name + "*"):
        leftover.unlink()
    paths = sorted(str(p) for p in drops.iterdir() if p.is_dir())
    started, cpu = time.perf_counter(), time.process_time()
    options = {"chunk_bytes": args.chunk_mib * 2**20} if args.chunk_mib else {}
    result = loader.load_drops(Warehouse(out), paths, **options)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(f"{len(result.drops)} drops, {len(result.refused)} refused, {total:.2f} s, CPU {cpu:.2f} s, "
          f"peak {int(hwm.split()[1]) / 1024:.0f} MiB")
    for name, seconds in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {seconds:7.2f}")
    for query, seconds in sorted(SQL.items(), key=lambda kv: -kv[1])[:40]:
        print(f"  {seconds:7.2f} {SQL_CPU[query]:7.2f} cpu  {query}")
    sums = checksums(out)
    for table, (rows, digest) in sums.items():
        print(f"  {table:24s} {rows:>10} {digest}")
    if args.compare:
        other = checksums(args.compare)
        differ = [t for t in sorted(set(sums) | set(other)) if sums.get(t) != other.get(t)]
        print("SAME as " + str(args.compare) if not differ else "DIFFERENT tables: " + ", ".join(differ))


if __name__ == "__main__":
    main()
