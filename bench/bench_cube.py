"""Cube benchmark: the standard queries against the best hand-written DuckDB SQL, same warehouse, same run.

    python3 bench/bench_cube.py --scale 4

Uses the warehouse bench_load.py built (bench/out/load-s4/w.duckdb), or
builds one. Each query: median of warm runs; the cube's time is the whole
`Cube.query` call (as-of lookup, compiled SQL from the cache, execution,
Arrow table), the hand-written one a cursor executing its SQL to Arrow. The
answers are checked equal before timing. Compile time is measured cold
(cache cleared) and reported separately. Goal: at most 1.3x, compile < 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, drops_for, median_seconds, report  # noqa: E402

HAND_WRITTEN = {
    "entries by region x week": ("""
        WITH daily AS (  -- aggregate first, then place the few groups in region and week
            SELECT department, start_date, count(*) AS n FROM contracts
            WHERE status <> 'CANCELLED' AND start_date BETWEEN $start AND $end GROUP BY ALL)
        SELECT d.region_2005_code AS region_2005, cal.week_label AS week, sum(n) AS entries
        FROM daily JOIN dim_department d ON d.department_code = daily.department
        JOIN dim_calendar cal ON cal.day = daily.start_date
        GROUP BY ALL ORDER BY ALL"""),
    "stock by region x week, two years": ("""
        WITH ev AS (
            SELECT department, day, sum(v) AS v FROM (
                SELECT department, start_date AS day, 1 AS v FROM contracts
                WHERE status <> 'CANCELLED' AND start_date <= $end
                UNION ALL
                SELECT department, end_date, -1 FROM contracts
                WHERE status <> 'CANCELLED' AND end_date <= $end) GROUP BY ALL
        ), weekly AS (
            SELECT d.region_2005_code AS r,
                   CASE WHEN ev.day < $start THEN (SELECT week_label FROM dim_calendar WHERE day = $start)
                        ELSE cal.week_label END AS week, sum(v) AS v
            FROM ev JOIN dim_department d ON d.department_code = ev.department
            JOIN dim_calendar cal ON cal.day = ev.day GROUP BY ALL
        ), grid AS (
            SELECT DISTINCT d.region_2005_code AS r, cal.week_label AS week
            FROM dim_department d, dim_calendar cal WHERE cal.day BETWEEN $start AND $end
        )
        SELECT grid.r AS region_2005, grid.week,
               sum(coalesce(weekly.v, 0)) OVER (PARTITION BY grid.r ORDER BY grid.week) AS stock
        FROM grid LEFT JOIN weekly ON weekly.r = grid.r AND weekly.week = grid.week ORDER BY ALL"""),
    "payments by region x month": ("""
        WITH daily AS (  -- aggregate first, then place the few groups in region and month
            SELECT department, paid_date, sum(amount_eur) AS s FROM payments
            WHERE NOT contract_cancelled AND paid_date BETWEEN $start AND $end GROUP BY ALL)
        SELECT d.region_2005_code AS region_2005, cal.month_label AS month, sum(s) AS payments_eur
        FROM daily JOIN dim_department d ON d.department_code = daily.department
        JOIN dim_calendar cal ON cal.day = daily.paid_date
        GROUP BY ALL ORDER BY ALL"""),
    "financial consumption by region x measure": ("""
        WITH pay AS (
            SELECT d.region_2005_code AS r, p.measure AS m, sum(p.s) AS s
            FROM (SELECT department, measure, sum(amount_eur) AS s FROM payments
                  WHERE NOT contract_cancelled AND paid_date BETWEEN make_date(year($end), 1, 1) AND $end
                  GROUP BY ALL) p
            JOIN dim_department d ON d.department_code = p.department GROUP BY ALL
        )
        SELECT e.region_code AS region_2005, e.measure,
               CASE WHEN e.financial_envelope_eur = 0 THEN NULL
                    ELSE CAST(coalesce(pay.s, 0) AS DOUBLE) / CAST(e.financial_envelope_eur AS DOUBLE) END
                    AS financial_consumption
        FROM envelopes e LEFT JOIN pay ON pay.r = e.region_code AND pay.m = e.measure
        WHERE e.year = year($end) ORDER BY ALL"""),
}

CUBE = {
    "entries by region x week": (["entries"], ["region_2005", "week"], "{year}-01-01"),
    "stock by region x week, two years": (["stock"], ["region_2005", "week"], "{previous}-01-01"),
    "payments by region x month": (["payments_eur"], ["region_2005", "month"], "{year}-01-01"),
    "financial consumption by region x measure": (["financial_consumption"], ["region_2005", "measure"],
                                                  "{year}-01-01"),
}


def comparable(rows) -> list[tuple]:
    out = []
    for row in rows:
        values = tuple(round(float(v), 6) if isinstance(v, (float, int)) or hasattr(v, "as_tuple") else v
                       for v in row)
        if not any(isinstance(v, float) and v == 0 for v in values[2:]):  # the grid's zero rows
            out.append(values)
    return sorted(out, key=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--year", type=int, default=2006)
    args = parser.parse_args()
    from pilotage.cubes import Cube
    from pilotage.cubes.compiler import compile_request
    from pilotage.warehouse import Warehouse

    path = OUT / f"load-s{args.scale:g}" / "w.duckdb"
    if not path.exists():
        from pilotage.etl.loader import load_drops

        path.parent.mkdir(parents=True, exist_ok=True)
        load_drops(Warehouse(path), [drops_for(args.scale)])
    warehouse = Warehouse(path)
    cube = Cube(warehouse)
    # the generated year (bench_load's daily drop of 2007-01-02 would make it a year of one day)
    as_of = min(cube.as_of(), date(args.year, 12, 31))
    reading = cube.reading()  # both sides on one open connection: warm
    reading.__enter__()
    con = cube._con
    year = as_of.year
    rows = []
    for name, sql in HAND_WRITTEN.items():
        measures, by, start = CUBE[name]
        start = date.fromisoformat(start.format(year=year, previous=year - 1))
        params = {"start": start, "end": as_of}
        used = {k: v for k, v in params.items() if f"${k}" in sql}

        def hand() -> list:
            return con.sql(sql, params=used).to_arrow_table()

        def ours():
            return cube.query(measures, by=by, start=start, end=as_of)

        expected = comparable([tuple(r.values()) for r in hand().to_pylist()])
        got = comparable([tuple(r.values()) for r in ours().to_pylist()])
        if expected != got:
            raise SystemExit(f"{name}: the cube and the hand-written SQL disagree "
                             f"({len(expected)} vs {len(got)} rows; first differences: "
                             f"{[e for e in expected if e not in got][:3]} / {[g for g in got if g not in expected][:3]})")
        hand_s = median_seconds(hand, args.repeat)
        cube_s = median_seconds(ours, args.repeat)
        request = cube.request(measures, by, None, start, as_of, None, None, as_of)
        compile_times = []
        for _ in range(20):
            started = time.perf_counter()
            compile_request(request, cube.catalog)
            compile_times.append(time.perf_counter() - started)
        rows.append((name, len(got), f"{hand_s * 1000:.1f}", f"{cube_s * 1000:.1f}", f"{cube_s / hand_s:.2f}x",
                     f"{statistics.median(compile_times) * 1000:.2f}"))
    with warehouse.connect() as con:
        contracts = con.sql("SELECT count(*) FROM contracts").fetchall()[0][0]
    print(f"\nscale {args.scale:g}: {contracts:,} contracts, as of {as_of}; medians of {args.repeat} warm runs")
    report(rows, ("query", "rows", "hand-written ms", "cube ms", "ratio", "compile ms (cold)"))


if __name__ == "__main__":
    main()
