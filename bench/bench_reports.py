"""Reports benchmark: every regional weekly report (HTML and Excel) on the scale-4 warehouse.

    python3 bench/bench_reports.py [--scale 4] [--week 2006-W50] [--repeat 3]

Uses the warehouse bench_load.py built (bench/out/load-s<scale>/w.duckdb), read
only. Measured, each in a fresh process (wall time after imports, peak RSS):

* the whole job: `render_report(cube, "weekly-regional")` for all regions,
  HTML and Excel;
* its queries alone, batched: each of the report's queries run once for all
  the regions (the way render_report runs them), then split;
* the same queries repeated region by region (what batching avoids);

and, warm in one process, the batched queries through the cube against the
raw DuckDB time of the very SQL statements the cube runs for them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, median_seconds, measured, report  # noqa: E402

WHOLE_JOB = """
from pathlib import Path
from pilotage.cubes import Cube
from pilotage.reports import render_report
cube = Cube(warehouse)
start()
paths = render_report(cube, "weekly-regional", week=week, formats=formats, out_dir=out)
result["files"] = len(paths)
result["mib_written"] = sum(Path(p).stat().st_size for p in paths) / 2**20
"""

QUERIES = """
from pilotage.cubes import Cube
from pilotage.cubes.model import members
from pilotage.reports.data import fetch
from pilotage.reports.declarations import get_report
from pilotage.reports.periods import report_end
cube = Cube(warehouse)
report = get_report("weekly-regional")
start()
with cube.reading():
    end = report_end(cube.as_of(), week=week)
    if per_region:
        for code, _ in members("region_2005"):
            fetch(cube, report, end, regions=(code,))
    else:
        answers = fetch(cube, report, end)
result["regions"] = len(members("region_2005"))
"""


def statements(cube, report, end, as_of):
    """The (sql, params) the cube runs for the report's batched queries, in order."""
    from pilotage.cubes.compare import comparison_request
    from pilotage.reports.data import needed_queries, request_signature
    from pilotage.reports.periods import period_range

    found, seen = [], set()
    for name, without in needed_queries(report):
        if request_signature(report, (name, without), "2005") in seen:
            continue  # fetch asks an identical query once
        seen.add(request_signature(report, (name, without), "2005"))
        query = report.query(name)
        by = ["region_2005"] + [d for d in query.dims("2005") if d not in without]
        start, stop = period_range(query.period, end)
        request = cube.request(query.measures, by, dict((d, list(v)) for d, v in query.where) or None,
                               start, stop, None, None, as_of)
        compiled = cube.compile(request)
        if not query.compare:
            found.append((compiled.sql, compiled.params))
        for how in query.compare:  # Cube.compare runs the current period and the comparison period
            other = cube.compile(comparison_request(cube._con, request, how))
            found += [(compiled.sql, compiled.params), (other.sql, other.params)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4)
    parser.add_argument("--week", default=None, help="ISO week YYYY-Www (default: the week of the as-of date)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warehouse", type=Path, help="another warehouse to read (default: the scale's)")
    args = parser.parse_args()
    path = args.warehouse or OUT / f"load-s{args.scale:g}" / "w.duckdb"
    if not path.exists():
        raise SystemExit(f"no warehouse at {path}: run bench/bench_load.py --scale {args.scale:g} first")

    from pilotage.cubes import Cube
    from pilotage.reports.data import fetch
    from pilotage.reports.declarations import get_report
    from pilotage.reports.periods import report_end, week_label

    cube = Cube(path)
    as_of = cube.as_of()
    end = report_end(as_of, week=args.week)
    week = args.week or week_label(end)
    with cube.warehouse.connect() as con:
        contracts = con.sql("SELECT count(*) FROM contracts").fetchall()[0][0]
    print(f"{path}: {contracts:,} contracts, as of {as_of}; weekly-regional for {week} (to {end})",
          flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for label, formats in (("all regions, HTML + Excel", ["html", "xlsx"]), ("all regions, Excel only", ["xlsx"]),
                               ("all regions, HTML only", ["html"])):
            step = measured(WHOLE_JOB, warehouse=str(path), week=week, formats=formats, out=f"{out}/{formats[-1]}")
            rows.append((label, f"{step['seconds']:.2f}", f"{step['peak_mib']:.0f}",
                         f"{step['files']} files, {step['mib_written']:.0f} MiB"))
            print("  ", rows[-1], flush=True)
    for label, per_region in (("queries, batched (once for all regions)", False),
                              ("queries, repeated region by region", True)):
        step = measured(QUERIES, warehouse=str(path), week=week, per_region=per_region)
        rows.append((label, f"{step['seconds']:.2f}", f"{step['peak_mib']:.0f}", f"{step['regions']} regions"))
        print("  ", rows[-1], flush=True)
    print()
    report(rows, ("step (fresh process)", "seconds", "peak MiB", "output"))

    report_decl = get_report("weekly-regional")
    with cube.reading():
        con = cube._con
        sql = statements(cube, report_decl, end, as_of)

        def raw():
            for text, params in sql:
                con.sql(text, params=params).to_arrow_table()

        def ours():
            fetch(cube, report_decl, end)

        raw_s = median_seconds(raw, args.repeat)
        cube_s = median_seconds(ours, args.repeat)
    print(f"\nbatched queries, warm, one connection (median of {args.repeat}): {len(sql)} SQL statements; "
          f"raw DuckDB {raw_s:.2f} s, through the cube and split by region {cube_s:.2f} s "
          f"({cube_s / raw_s:.2f}x)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(benchmark ran in {time.perf_counter() - started:.0f} s)")
