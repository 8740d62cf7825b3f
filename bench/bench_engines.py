"""Engines benchmark: the standard cube queries on DuckDB and on Spark (local mode), same data, same run.

    python3 bench/bench_engines.py [--scale 4] [--master local[2]] [--repeat 3]

Uses the warehouse bench_load.py built (bench/out/load-s<scale>/w.duckdb) and
exports it as the lake (bench/out/lake-s<scale>, incremental: free after the
first time). Each standard query of bench_cube.py is timed (median of warm
runs) four ways:

* raw DuckDB: the hand-written SQL on one open connection (bench_cube's);
* the cube on DuckDB (`Cube.query`);
* the cube on Spark (`SparkCube.query`: the same compiled statement in Spark SQL
  over the lake's Parquet);
* raw DuckDB over the same Parquet lake (the hand-written SQL on views of the
  lake), to tell the file format's share from the engine's.

The answers are checked equal (to the cent) before timing. Also measured: the
lake export (full and incremental) and the Spark session's start.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cube import CUBE, HAND_WRITTEN  # noqa: E402
from common import OUT, median_seconds, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--year", type=int, default=2006)
    args = parser.parse_args()
    import duckdb

    from pilotage.cubes import Cube
    from pilotage.cubes.spark import SparkCube
    from pilotage.lake import TABLES, export_lake
    from pilotage.warehouse import Warehouse

    path = OUT / f"load-s{args.scale:g}" / "w.duckdb"
    if not path.exists():
        raise SystemExit(f"no warehouse at {path}: run bench/bench_load.py --scale {args.scale:g} first")
    warehouse = Warehouse(path)
    lake = OUT / f"lake-s{args.scale:g}"
    started = time.perf_counter()
    exported = export_lake(warehouse, lake, full=True)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    export_lake(warehouse, lake)
    incremental_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in lake.rglob("*.parquet")) / 2**20
    print(f"lake: {len(exported.written)} partitions, {size:.0f} MiB of Parquet; full export {full_s:.1f} s, "
          f"incremental with nothing changed {incremental_s:.1f} s", flush=True)

    cube = Cube(warehouse)
    started = time.perf_counter()
    spark = SparkCube(lake, args.master)
    print(f"Spark session ({args.master}) and views: {time.perf_counter() - started:.1f} s", flush=True)
    as_of = min(cube.as_of(), date(args.year, 12, 31))
    on_lake = duckdb.connect()
    for table in TABLES:
        folder = lake / table.name
        if folder.exists():
            glob = f"{folder}/*/*.parquet" if table.partitioned else f"{folder}/*.parquet"
            on_lake.execute(f"CREATE VIEW {table.name} AS SELECT * FROM read_parquet('{glob}', "
                            f"hive_partitioning = {str(table.partitioned).lower()})")
    rows = []
    with cube.reading():
        con = cube._con
        for name, sql in HAND_WRITTEN.items():
            measures, by, start = CUBE[name]
            start = date.fromisoformat(start.format(year=as_of.year, previous=as_of.year - 1))
            params = {k: v for k, v in {"start": start, "end": as_of}.items() if f"${k}" in sql}
            duck = cube.query(measures, by=by, start=start, end=as_of).to_pylist()
            sparked = spark.query(measures, by=by, start=start, end=as_of).to_pylist()
            if duck != sparked:
                raise SystemExit(f"{name}: Spark and DuckDB disagree")
            raw_s = median_seconds(lambda: con.sql(sql, params=params).to_arrow_table(), args.repeat)
            cube_s = median_seconds(lambda: cube.query(measures, by=by, start=start, end=as_of), args.repeat)
            lake_s = median_seconds(lambda: on_lake.sql(sql, params=params).to_arrow_table(), args.repeat)
            spark_s = median_seconds(lambda: spark.query(measures, by=by, start=start, end=as_of), args.repeat)
            rows.append((name, len(duck), f"{raw_s * 1000:.0f}", f"{cube_s * 1000:.0f}", f"{lake_s * 1000:.0f}",
                         f"{spark_s * 1000:.0f}", f"{spark_s / cube_s:.1f}x"))
            print("  ", rows[-1], flush=True)
    spark.spark.stop()
    print()
    report(rows, ("query", "rows", "raw DuckDB ms", "cube DuckDB ms", "raw DuckDB on lake ms", "cube Spark ms",
                  "Spark / DuckDB"))


if __name__ == "__main__":
    main()
