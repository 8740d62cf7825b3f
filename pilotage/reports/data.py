"""Running a report's queries through the cube, batched across regions.

A per-region report's queries are each run ONCE for all the regions asked,
broken down by region, and the answer is split region by region: 26 regional
reports cost the queries of one. A region's answers hold only the rows of
that region. Tables with totals need the same query without their row (and
pivot) dimension: the cube computes totals at that level, so a total of a
ratio or a stock is right, never a sum of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pilotage.cubes import Cube, Scope
from pilotage.cubes.model import members
from pilotage.reports.declarations import GEOGRAPHIES, Chart, Gauges, Report, Table, Tiles
from pilotage.reports.periods import period_range

QueryKey = tuple[str, tuple[str, ...]]  # (query name, dimensions left out, for totals)
SUFFIX = {"previous": "previous", "year": "year_before"}


def column_name(indicator: str, show: str) -> str:
    """The answer column holding `show` (value, previous, year_before, vs_previous, vs_year) of an indicator."""
    return indicator if show == "value" else f"{indicator}_{show}"


@dataclass(frozen=True)
class Answers:
    """The answers to a report's queries for one region (region None: the nation)."""

    region: str | None
    results: dict[QueryKey, list[dict]] = field(default_factory=dict)

    def rows(self, query: str, without: tuple[str, ...] = ()) -> list[dict]:
        return self.results[(query, tuple(without))]


def needed_queries(report: Report) -> list[QueryKey]:
    """Each query the blocks show, and its totals versions, once."""
    keys: list[QueryKey] = []
    for block in report.blocks:
        if isinstance(block, (Tiles, Gauges, Chart)):
            keys.append((block.query, ()))
        elif isinstance(block, Table):
            for name in block.queries():
                keys.append((name, ()))
                if block.totals:
                    keys.append((name, (block.rows,)))
            if block.pivot and block.totals:
                keys += [(block.query, (block.pivot,)), (block.query, (block.rows, block.pivot))]
    return list(dict.fromkeys(keys))


def fetch(cube: Cube, report: Report, end: date, known_at: date | None = None, geography: str = "2005",
          regions: tuple[str, ...] | None = None, scope: Scope | None = None) -> dict[str | None, Answers]:
    """Answers by region code (by None for a national report), every query run once.

    Run it inside `cube.reading()` to keep one connection for all the queries.
    A scope restricts every query (a recipient sees only their part).
    """
    level = GEOGRAPHIES[geography]
    per_region = report.per == "region"
    split: dict[str | None, Answers] = {}
    if per_region:
        split = {code: Answers(code) for code in regions or [c for c, _ in members(level)]}
    else:
        split[None] = Answers(None)
    answered: dict[tuple, list[dict]] = {}
    for key in needed_queries(report):
        signature = request_signature(report, key, geography)
        if signature not in answered:  # e.g. a table's totals that are another block's query
            answered[signature] = run_query(cube, report, key, end, known_at, geography,
                                            regions if per_region else None, scope)
        rows = answered[signature]
        if not per_region:
            split[None].results[key] = rows
            continue
        for answers in split.values():
            answers.results[key] = []
        for row in rows:
            row = dict(row)
            code = row.pop(level)
            if code in split:
                split[code].results[key].append(row)
    return split


def request_signature(report: Report, key: QueryKey, geography: str) -> tuple:
    """What a query asks of the cube: two queries with the same signature have the same answer."""
    name, without = key
    query = report.query(name)
    by = tuple(d for d, declared in zip(query.dims(geography), query.by) if declared not in without)
    return frozenset(query.measures), by, query.where, query.period, frozenset(query.compare)


def run_query(cube: Cube, report: Report, key: QueryKey, end: date, known_at: date | None, geography: str,
              regions: tuple[str, ...] | None, scope: Scope | None = None) -> list[dict]:
    """One cube query (two per comparison asked), for all the regions asked when `regions` is given."""
    name, without = key
    query = report.query(name)
    level = GEOGRAPHIES[geography]
    by = [GEOGRAPHIES[geography] if d == "region" else d for d in query.by if d not in without]
    where = {dim: list(values) for dim, values in query.where}
    if report.per == "region":
        by.insert(0, level)
        if regions is not None:
            where[level] = list(regions)
    start, stop = period_range(query.period, end)
    args = dict(measures=query.measures, by=by, where=where or None, start=start, end=stop, known_at=known_at,
                scope=scope)
    if not query.compare:
        return cube.query(**args).to_pylist()
    rows: list[dict] | None = None
    for how in query.compare:
        compared = cube.compare(**args, how=how).to_pylist()
        if rows is None:
            rows = [{k: r[k] for k in by + list(query.measures)} for r in compared]
        for row, other in zip(rows, compared, strict=True):
            assert all(row[k] == other[k] for k in by), "comparisons answer the same rows in the same order"
            for m in query.measures:
                row[f"{m}_{SUFFIX[how]}"] = other[f"{m}_{SUFFIX[how]}"]
                row[f"{m}_vs_{how}"] = other[f"{m}_change_pct"]
    return rows or []
