"""Comparing each period with the previous one or with the same period a year before.

A comparison period covers the same span as the period it is compared with:
the current week, clipped to a Wednesday as-of date, is compared with Monday
to Wednesday of the week before (or of the same ISO week a year before), not
with a whole week. Stocks are read on the matching day.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from pilotage.cubes.compiler import PERIOD_LABEL, Request

SUFFIX = {"previous": "previous", "year": "year_before"}
_LABEL = {k: v.removeprefix("cal.").replace("CAST(", "").replace(" AS VARCHAR)", "") for k, v in PERIOD_LABEL.items()}


def _year_before_label(grain: str, label: str) -> str:
    if grain == "day":
        day = date.fromisoformat(label)
        try:
            return day.replace(year=day.year - 1).isoformat()
        except ValueError:  # February 29
            return date(day.year - 1, 2, 28).isoformat()
    return str(int(label[:4]) - 1) + label[4:]


def _bounds(con, grain: str, labels: list[str]) -> dict[str, tuple[date, date]]:
    column = _LABEL[grain]
    rows = con.execute(
        f"SELECT CAST({column} AS VARCHAR), min(day), max(day) FROM dim_calendar "
        f"WHERE list_contains(?, CAST({column} AS VARCHAR)) GROUP BY 1",
        [labels],
    ).fetchall()
    return {label: (first, last) for label, first, last in rows}


def comparison_request(con, request: Request, how: str) -> Request:
    """The request whose periods are the comparison periods, labelled like the originals."""
    if how not in SUFFIX:
        raise ValueError(f"compare is previous or year, not {how!r}")
    grain = request.time
    if grain is None:
        span = request.end - request.start
        if how == "previous":
            first = request.start - span - timedelta(days=1)
        else:
            first = date.fromisoformat(_year_before_label("day", request.start.isoformat()))
        return replace(request, periods=(("all", first, first + span),), start=first, end=first + span)
    column = _LABEL[grain]
    rows = con.execute(
        f"SELECT CAST({column} AS VARCHAR) AS label, min(day), max(day) FROM dim_calendar "
        f"WHERE day BETWEEN ? AND ? GROUP BY 1 ORDER BY 1",
        [request.start, request.end],
    ).fetchall()
    whole = _bounds(con, grain, [label for label, _, _ in rows])
    if how == "previous":
        before = {label: con.execute(
            f"SELECT CAST({column} AS VARCHAR) FROM dim_calendar WHERE day = ?",
            [whole[label][0] - timedelta(days=1)]).fetchall()[0][0] for label, _, _ in rows}
    else:
        before = {label: _year_before_label(grain, label) for label, _, _ in rows}
    target = _bounds(con, grain, list(before.values()))
    periods = []
    for label, first, last in rows:
        if before[label] not in target:  # e.g. a week 53 the year before did not have
            continue
        start, end = target[before[label]]
        first_day = min(start + (first - whole[label][0]), end)
        periods.append((label, first_day, min(end, first_day + (last - first))))
    if not periods:
        periods.append(("-", request.start, request.start))  # nothing to compare with
    return replace(request, periods=tuple(periods), start=min(p[1] for p in periods),
                   end=max(p[2] for p in periods))
