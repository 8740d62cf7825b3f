"""The explorer's question: indicators, dimensions, filters and period, from a URL or a JSON body.

One `Exploration` is what a user asked, whatever the way in: the explorer
page's form (a GET, so that its URL is a shareable link), the exports, and
`POST /api/query`. It never carries a scope: the viewer's own scope is added
when it runs (`run`), so a link shared with someone else shows them their own
part of the country, never the sender's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

import pyarrow as pa

from pilotage.cubes import Cube, QueryError, Scope
from pilotage.cubes.cube import parse_date
from pilotage.cubes.model import DIMENSIONS, TIME
from pilotage.measures.catalog import Catalog

MAX_MEASURES = 8
MAX_BY = 4
MAX_ROWS = 5000  # a table in a page; exports carry everything
COMPARE = ("previous", "year")


class ExplorationError(ValueError):
    """A question that cannot be asked; the message says which field and why (shown to the user)."""


@dataclass(frozen=True)
class Exploration:
    measures: tuple[str, ...]
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    start: date | None = None
    end: date | None = None
    known_at: date | None = None
    compare: str | None = None

    @classmethod
    def from_params(cls, params, catalog: Catalog) -> "Exploration":
        """From URL parameters: measure=..&by=..&where=dim:v1,v2&from=&to=&known_at=&compare= (repeatable)."""
        getlist = params.getlist if hasattr(params, "getlist") else (lambda k: _as_list(params.get(k)))
        where = []
        for item in getlist("where"):
            if not item:
                continue
            dim, _, values = item.partition(":")
            where.append((dim.strip(), tuple(v.strip() for v in values.split(",") if v.strip())))
        return cls.checked([m for m in getlist("measure") if m], [b for b in getlist("by") if b], where,
                           _one(params, "from"), _one(params, "to"), _one(params, "known_at"),
                           _one(params, "compare"), catalog)

    @classmethod
    def from_json(cls, body, catalog: Catalog) -> "Exploration":
        """From the API's JSON: {"measures": [...], "by": [...], "where": {"dim": [..]}, "start", "end",
        "known_at", "compare"} -- the fields of `Cube.query`."""
        if not isinstance(body, Mapping):
            raise ExplorationError("the body must be a JSON object with measures, by, where, start, end, known_at")
        unknown = set(body) - {"measures", "by", "where", "start", "end", "known_at", "compare"}
        if unknown:
            raise ExplorationError(f"unknown field(s) {', '.join(sorted(unknown))}; valid: measures, by, where, "
                                   "start, end, known_at, compare")
        where = body.get("where") or {}
        if not isinstance(where, Mapping):
            raise ExplorationError("where: an object of dimension to value or list of values")
        return cls.checked(_as_list(body.get("measures")), _as_list(body.get("by")),
                           [(str(d), tuple(str(v) for v in _as_list(vs))) for d, vs in where.items()],
                           body.get("start"), body.get("end"), body.get("known_at"), body.get("compare"), catalog)

    @classmethod
    def checked(cls, measures, by, where, start, end, known_at, compare, catalog: Catalog) -> "Exploration":
        measures = tuple(dict.fromkeys(str(m) for m in measures))
        by = tuple(dict.fromkeys(str(b) for b in by))
        if not measures:
            raise ExplorationError("measures: choose at least one indicator")
        if len(measures) > MAX_MEASURES or len(by) > MAX_BY:
            raise ExplorationError(f"at most {MAX_MEASURES} indicators and {MAX_BY} dimensions")
        names = set(catalog.names())
        bad = [m for m in measures if m not in names]
        if bad:
            raise ExplorationError(f"measures: unknown indicator(s) {', '.join(bad)}")
        bad = [d for d in by + tuple(d for d, _ in where) if d not in DIMENSIONS]
        if bad:
            raise ExplorationError(f"unknown dimension(s) {', '.join(bad)}; valid: {', '.join(DIMENSIONS)}")
        if compare not in (None, "", *COMPARE):
            raise ExplorationError(f"compare: {compare!r} is not one of {', '.join(COMPARE)}")
        dates = [parse_date(v or None, n, ExplorationError) for v, n in
                 ((start, "start"), (end, "end"), (known_at, "known_at"))]
        if dates[0] and dates[1] and dates[0] > dates[1]:
            raise ExplorationError("start: after end")
        return cls(measures, by, tuple((d, tuple(vs)) for d, vs in where if vs), dates[0], dates[1], dates[2],
                   compare or None)

    def query_string(self) -> str:
        """The URL parameters of this question (the explorer's shareable link)."""
        pairs = [("measure", m) for m in self.measures] + [("by", b) for b in self.by]
        pairs += [("where", f"{d}:{','.join(vs)}") for d, vs in self.where]
        pairs += [(k, v.isoformat()) for k, v in (("from", self.start), ("to", self.end),
                                                  ("known_at", self.known_at)) if v]
        if self.compare:
            pairs.append(("compare", self.compare))
        return urlencode(pairs)

    def as_dict(self) -> dict:
        return {"measures": list(self.measures), "by": list(self.by), "where": {d: list(v) for d, v in self.where},
                "start": self.start and self.start.isoformat(), "end": self.end and self.end.isoformat(),
                "known_at": self.known_at and self.known_at.isoformat(), "compare": self.compare}


def run(cube: Cube, question: Exploration, scope: Scope) -> pa.Table:
    """The answer, in the viewer's scope (the cube applies it to every fact)."""
    where = {d: list(vs) for d, vs in question.where}
    try:
        if question.compare:
            return cube.compare(question.measures, question.by, where, question.start, question.end,
                                question.known_at, scope, how=question.compare, labels=True)
        return cube.query(question.measures, question.by, where, question.start, question.end, question.known_at,
                          scope, labels=True)
    except QueryError as exc:
        raise ExplorationError(str(exc)) from None


def chart_figure(table: pa.Table, question: Exploration, catalog: Catalog) -> dict | None:
    """A plotly figure of the answer: the first indicator along the time (or first) dimension, one line or
    bar series per member of the second dimension. None when there is nothing to draw."""
    if not question.by or table.num_rows == 0 or table.num_rows > 2000:
        return None
    time_dims = [d for d in question.by if d in TIME]
    x = time_dims[0] if time_dims else question.by[0]
    others = [d for d in question.by if d != x]
    series_dim = others[0] if others else None
    measure = question.measures[0]
    rows = table.to_pylist()
    label = (lambda r, d: r.get(f"{d}_name") or r[d])
    categories = list(dict.fromkeys(str(label(r, x)) for r in rows))
    groups: dict[str, dict[str, float | None]] = {}
    for r in rows:
        name = str(label(r, series_dim)) if series_dim else catalog[measure].label
        value = r.get(measure)
        groups.setdefault(name, {})[str(label(r, x))] = None if value is None else float(value)
    kind = "scatter" if x in TIME else "bar"
    data = [{"type": kind, "mode": "lines+markers" if kind == "scatter" else None, "name": name,
             "x": categories, "y": [values.get(c) for c in categories]} for name, values in list(groups.items())[:12]]
    for trace in data:
        if trace["mode"] is None:
            del trace["mode"]
    return {"data": data, "layout": {"height": 420, "margin": {"l": 70, "r": 20, "t": 20, "b": 90},
                                     "separators": ", ", "xaxis": {"type": "category", "automargin": True},
                                     "yaxis": {"title": {"text": catalog[measure].label}, "rangemode": "tozero",
                                               "automargin": True},
                                     "legend": {"orientation": "h", "y": -0.3}}}


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _one(params, key: str):
    value = params.get(key)
    return value or None
