"""Report declarations: YAML files parsed once into frozen dataclasses.

A report is a set of named cube queries and the blocks that show them: KPI
tiles, envelope gauges, tables and charts. The package's reports live in
`pilotage/reports/definitions/*.yml`; users add theirs in folders named by
$PILOTAGE_REPORTS (os.pathsep-separated) or passed to `load_reports`. A user
file with the name of a package report replaces it; one with `extends: NAME`
adds queries and blocks to report NAME (a query or block of the same name
replaces the inherited one). Every declaration is checked against the
indicator catalog and the cube model when loaded; an error names the file,
the report, the block or query, and the problem.

The format (see definitions/daily.yml for a whole report):

    report: weekly-regional         # the name given to `pilotage report`
    title: Rapport hebdomadaire régional
    file_name: hebdo                # files: hebdo_region-25_2006-W11.html ...
    per: region                     # nation (one report) | region (one per region)
    description: ...
    queries:
      week_by_department:
        measures: [stock, entries]  # indicators of the catalog
        by: [department, week]      # dimensions; `region`: region_2005 or _2016
        where: {measure: [CAE, CIE]}
        period: week                # day | week | month | year | 52_weeks, ending on the report's day
        compare: [previous, year]   # adds <m>_previous, <m>_year_before, <m>_vs_previous, <m>_vs_year
    blocks:
      - {id: semaine, type: tiles, title: ..., query: q, tiles: [{indicator: stock, good: up}]}
      - {id: enveloppes, type: gauges, title: ..., query: q,
         gauges: [{value: entries_ytd, target: physical_envelope, ratio: physical_realisation}]}
      - {id: departements, type: table, title: ..., query: q, rows: department, totals: true,
         columns: [stock, {indicator: entries, show: vs_year}, {indicator: entries_ytd, query: other}]}
      - {id: pivot, type: table, title: ..., query: q, rows: region, pivot: measure, value: entries_ytd}
      - {id: courbe, type: chart, chart: line, title: ..., query: q, x: week, series: measure,
         values: [entries], reference: year_elapsed}   # line | bar | stacked_bar

A block's query is broken down by exactly the dimensions the block shows (and
at most a time dimension of which the period is one period). In a per-region
report a query is written as if for one region: it is run for all regions at
once, broken down by region, and split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import yaml

from pilotage.cubes.compiler import QueryError, Request, validate
from pilotage.cubes.cube import parse_where
from pilotage.cubes.model import DIMENSIONS
from pilotage.measures.catalog import Catalog, load_catalog, yaml_files

ENV_VAR = "PILOTAGE_REPORTS"
REGION = "region"  # stands for region_2005 or region_2016, by the report's geography
GEOGRAPHIES = {"2005": "region_2005", "2016": "region_2016"}
# Period name -> the time grain of which it is exactly one period (None: several weeks).
PERIODS = {"day": "day", "week": "week", "month": "month", "year": "year", "52_weeks": None}
PER = ("nation", "region")
COMPARE = ("previous", "year")
SHOWS = {"value": None, "previous": "previous", "vs_previous": "previous", "year_before": "year",
         "vs_year": "year"}
CHARTS = ("line", "bar", "stacked_bar")
GOOD = ("up", "down", "neutral")
REFERENCES = ("year_elapsed",)


class ReportError(ValueError):
    """A report declaration or request is wrong; the message says where and why."""


@dataclass(frozen=True)
class Query:
    name: str
    measures: tuple[str, ...]
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    period: str = "day"
    compare: tuple[str, ...] = ()

    def dims(self, geography: str = "2005") -> tuple[str, ...]:
        """`by` with `region` resolved to the geography's level."""
        return tuple(GEOGRAPHIES[geography] if d == REGION else d for d in self.by)


@dataclass(frozen=True)
class Tile:
    indicator: str
    good: str = "up"  # the direction that is good news: up, down or neutral


@dataclass(frozen=True)
class Gauge:
    value: str  # e.g. entries_ytd
    target: str  # e.g. physical_envelope
    ratio: str  # e.g. physical_realisation (value / target)


@dataclass(frozen=True)
class Column:
    indicator: str
    query: str
    show: str = "value"  # value, previous, year_before, vs_previous, vs_year
    label: str | None = None


@dataclass(frozen=True)
class Block:
    id: str
    title: str
    query: str

    def queries(self) -> tuple[str, ...]:
        return (self.query,)


@dataclass(frozen=True)
class Tiles(Block):
    tiles: tuple[Tile, ...] = ()


@dataclass(frozen=True)
class Gauges(Block):
    gauges: tuple[Gauge, ...] = ()


@dataclass(frozen=True)
class Table(Block):
    rows: str = ""
    columns: tuple[Column, ...] = ()
    pivot: str | None = None  # a dimension whose members are the columns
    value: str | None = None  # the indicator in the cells of a pivot
    totals: bool = True

    def queries(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.query] + [c.query for c in self.columns]))


@dataclass(frozen=True)
class Chart(Block):
    chart: str = "line"
    x: str = ""
    series: str | None = None  # a dimension whose members are the series
    values: tuple[str, ...] = ()  # the indicators shown (the series, when `series` is not set)
    reference: str | None = None  # year_elapsed: a line at the share of the year elapsed


@dataclass(frozen=True)
class Mail:
    """What the body of the report's email shows (the whole report is attached).

    A mail client runs no JavaScript, so the body holds the KPI tiles, a short
    table (some columns of one of the report's tables) and one chart drawn as
    an inline image.
    """

    tiles: str  # the id of a tiles block
    table: str  # the id of a table block (not a pivot)
    columns: tuple[str, ...]  # the table's columns kept: indicators shown as values
    chart: str  # the id of a chart block


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    file_name: str
    per: str  # nation | region
    queries: tuple[Query, ...]
    blocks: tuple[Block, ...]
    description: str = ""
    source: str = ""
    mail: Mail | None = None

    def query(self, name: str) -> Query:
        return next(q for q in self.queries if q.name == name)

    def indicators(self) -> tuple[str, ...]:
        """Every indicator the report shows, in order of first appearance."""
        names: list[str] = []
        for block in self.blocks:
            if isinstance(block, Tiles):
                names += [t.indicator for t in block.tiles]
            elif isinstance(block, Gauges):
                names += [n for g in block.gauges for n in (g.value, g.target, g.ratio)]
            elif isinstance(block, Table):
                names += [block.value] if block.pivot else [c.indicator for c in block.columns]
            elif isinstance(block, Chart):
                names += list(block.values)
        return tuple(dict.fromkeys(names))


# -- loading -------------------------------------------------------------------------------------

def package_files() -> list[Path]:
    folder = resources.files("pilotage.reports") / "definitions"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yml", ".yaml")))


def user_files(folders: list[str | os.PathLike] | None = None) -> list[Path]:
    return yaml_files(folders, ENV_VAR, ReportError, "report")


def load_reports(extra: list[str | os.PathLike] | None = None, catalog: Catalog | None = None) -> dict[str, Report]:
    """The package's reports, then the user's.

    A user report replaces a package report of the same name; one with
    `extends: NAME` adds its queries and blocks to report NAME (a block or
    query of the same name replaces the one it extends).
    """
    catalog = catalog or load_catalog()
    reports: dict[str, Report] = {}
    package = set(package_files())
    for path in package_files() + user_files(extra):
        report = read_report(path, catalog, reports)
        previous = reports.get(report.name)
        user_twice = previous and path not in package and Path(previous.source) not in package
        if user_twice and not report.source.startswith(previous.source + " + "):
            raise ReportError(f"{path}: report {report.name!r} is already declared in {previous.source}")
        reports[report.name] = report
    return reports


def get_report(name: str, extra: list[str | os.PathLike] | None = None, catalog: Catalog | None = None) -> Report:
    reports = load_reports(extra, catalog)
    if name not in reports:
        raise ReportError(f"unknown report {name!r}; valid: {', '.join(sorted(reports))}")
    return reports[name]


def read_report(path: Path, catalog: Catalog, known: dict[str, Report] | None = None) -> Report:
    """One report file; `known` holds the reports an `extends:` may name."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ReportError(f"{path}: expected a mapping with report, title, queries and blocks")
    name = document.get("report")
    where = f"{path}: report {name!r}" if isinstance(name, str) and name else f"{path}"
    base = _base(document, known or {}, where)
    _keys(document, {"report", "extends", "title", "file_name", "per", "description", "queries", "blocks", "mail"},
          {"report"} if base else {"report", "title", "queries", "blocks"}, where)
    _text(document, "report", where)
    if not isinstance(document.get("queries", {}), dict) or not (base or document["queries"]):
        raise ReportError(f"{where}: 'queries' is a mapping of query names to queries")
    if not isinstance(document.get("blocks", []), list) or not (base or document["blocks"]):
        raise ReportError(f"{where}: 'blocks' is a list of blocks")
    queries = tuple(_query(str(n), q, f"{where}, query {n!r}") for n, q in (document.get("queries") or {}).items())
    blocks = tuple(_block(b, i, where) for i, b in enumerate(document.get("blocks") or [], start=1))
    inherited = base.__dict__ if base else {"title": None, "file_name": name, "per": "nation", "description": ""}
    report = Report(
        name=name, title=document["title"] if "title" in document else inherited["title"],
        file_name=str(document.get("file_name") or inherited["file_name"]),
        per=str(document.get("per", inherited["per"])),
        queries=_merged(base.queries if base else (), queries, "name"),
        blocks=_merged(base.blocks if base else (), blocks, "id"),
        description=str(document.get("description") or inherited["description"]).strip(),
        source=f"{base.source} + {path}" if base else str(path),
        mail=_mail(document["mail"], f"{where}, mail") if "mail" in document else base.mail if base else None,
    )
    if not isinstance(report.title, str) or not report.title.strip():
        raise ReportError(f"{where}: 'title' is required (a text)")
    check_report(report, catalog, where)
    return report


def _mail(entry, where: str) -> Mail:
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: expected a mapping with tiles, table, columns and chart")
    _keys(entry, {"tiles", "table", "columns", "chart"}, {"tiles", "table", "columns", "chart"}, where)
    return Mail(_text(entry, "tiles", where), _text(entry, "table", where),
                _names(entry["columns"], "columns", where), _text(entry, "chart", where))


def _base(document: dict, known: dict[str, Report], where: str) -> Report | None:
    name = document.get("extends")
    if name is None:
        return None
    if name not in known:
        raise ReportError(f"{where}: extends unknown report {name!r}; valid: {', '.join(sorted(known))}")
    return known[name]


def _merged(base: tuple, added: tuple, key: str) -> tuple:
    """base's items, those of `added` with the same key replacing them in place, the others appended."""
    replacing = {getattr(item, key): item for item in added}
    kept = tuple(replacing.pop(getattr(item, key), item) for item in base)
    return kept + tuple(item for item in added if getattr(item, key) in replacing)


def _keys(entry: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise ReportError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"valid: {', '.join(sorted(allowed))}")
    missing = required - set(entry)
    if missing:
        raise ReportError(f"{where}: '{sorted(missing)[0]}' is required")


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"{where}: '{key}' is required (a text)")
    return value


def _names(value, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ReportError(f"{where}: '{key}' is a list of names")
    return tuple(value)


def _query(name: str, entry, where: str) -> Query:
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: expected a mapping with measures, by, where, period, compare")
    _keys(entry, {"measures", "by", "where", "period", "compare"}, {"measures"}, where)
    where_ = entry.get("where") or {}
    if not isinstance(where_, dict):
        raise ReportError(f"{where}: 'where' is a mapping of dimension to value(s)")
    try:
        parsed = parse_where({str(k): v if isinstance(v, list) else str(v) for k, v in where_.items()})
    except QueryError as exc:
        raise ReportError(f"{where}: {exc}") from None
    return Query(name, _names(entry["measures"], "measures", where), _names(entry.get("by"), "by", where),
                 parsed, str(entry.get("period", "day")), _names(entry.get("compare"), "compare", where))


_BLOCK_KEYS = {
    "tiles": ({"tiles"}, {"tiles"}),
    "gauges": ({"gauges"}, {"gauges"}),
    "table": ({"rows", "columns", "pivot", "value", "totals"}, {"rows"}),
    "chart": ({"chart", "x", "series", "values", "reference"}, {"chart", "x", "values"}),
}


def _block(entry, position: int, report_where: str) -> Block:
    ident = entry.get("id") if isinstance(entry, dict) else None
    where = f"{report_where}, block {ident!r}" if ident else f"{report_where}, block #{position}"
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: expected a mapping")
    kind = entry.get("type")
    if kind not in _BLOCK_KEYS:
        raise ReportError(f"{where}: type {kind!r} is not one of {', '.join(_BLOCK_KEYS)}")
    allowed, required = _BLOCK_KEYS[kind]
    _keys(entry, allowed | {"id", "type", "title", "query"}, required | {"id", "title", "query"}, where)
    common = dict(id=_text(entry, "id", where), title=_text(entry, "title", where), query=_text(entry, "query", where))
    if kind == "tiles":
        return Tiles(**common, tiles=tuple(_tile(t, where) for t in _list(entry, "tiles", where)))
    if kind == "gauges":
        return Gauges(**common, gauges=tuple(_gauge(g, where) for g in _list(entry, "gauges", where)))
    if kind == "table":
        columns = tuple(_column(c, common["query"], where) for c in entry.get("columns") or [])
        return Table(**common, rows=_text(entry, "rows", where), columns=columns, pivot=entry.get("pivot"),
                     value=entry.get("value"), totals=bool(entry.get("totals", True)))
    return Chart(**common, chart=str(entry["chart"]), x=_text(entry, "x", where), series=entry.get("series"),
                 values=_names(entry["values"], "values", where), reference=entry.get("reference"))


def _list(entry: dict, key: str, where: str) -> list:
    items = entry.get(key)
    if not isinstance(items, list) or not items:
        raise ReportError(f"{where}: '{key}' is a non-empty list")
    return items


def _tile(entry, where: str) -> Tile:
    entry = {"indicator": entry} if isinstance(entry, str) else entry
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: a tile is an indicator name or a mapping with indicator and good")
    _keys(entry, {"indicator", "good"}, {"indicator"}, where + ", tile")
    return Tile(str(entry["indicator"]), str(entry.get("good", "up")))


def _gauge(entry, where: str) -> Gauge:
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: a gauge is a mapping with value, target and ratio")
    _keys(entry, {"value", "target", "ratio"}, {"value", "target", "ratio"}, where + ", gauge")
    return Gauge(str(entry["value"]), str(entry["target"]), str(entry["ratio"]))


def _column(entry, query: str, where: str) -> Column:
    entry = {"indicator": entry} if isinstance(entry, str) else entry
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: a column is an indicator name or a mapping with indicator, query, show, label")
    _keys(entry, {"indicator", "query", "show", "label"}, {"indicator"}, where + ", column")
    return Column(str(entry["indicator"]), str(entry.get("query", query)), str(entry.get("show", "value")),
                  entry.get("label"))


# -- checks ----------------------------------------------------------------------------------------

def check_report(report: Report, catalog: Catalog, where: str) -> None:
    if report.per not in PER:
        raise ReportError(f"{where}: per {report.per!r} is not one of {', '.join(PER)}")
    if not report.file_name.replace("-", "").replace("_", "").isalnum():
        raise ReportError(f"{where}: file_name {report.file_name!r} may hold only letters, digits, - and _")
    names = [q.name for q in report.queries]
    for query in report.queries:
        _check_query(report, query, catalog, f"{where}, query {query.name!r}")
    seen: set[str] = set()
    for block in report.blocks:
        block_where = f"{where}, block {block.id!r}"
        if block.id in seen:
            raise ReportError(f"{block_where}: the id is used by another block")
        seen.add(block.id)
        for name in block.queries():
            if name not in names:
                raise ReportError(f"{block_where}: unknown query {name!r}; valid: {', '.join(names)}")
        _check_block(report, block, catalog, block_where)
    if report.mail:
        _check_mail(report, f"{where}, mail")


def _check_mail(report: Report, where: str) -> None:
    blocks = {block.id: block for block in report.blocks}
    for key, kind in (("tiles", Tiles), ("table", Table), ("chart", Chart)):
        block_id = getattr(report.mail, key)
        ids = [b.id for b in report.blocks if isinstance(b, kind)]
        if not isinstance(blocks.get(block_id), kind):
            raise ReportError(f"{where}: {key} {block_id!r} is not a {key} block of the report; valid: "
                              f"{', '.join(ids) or '(none)'}")
    table = blocks[report.mail.table]
    if table.pivot:
        raise ReportError(f"{where}: table {table.id!r} is a pivot; choose a table with columns")
    shown = [c.indicator for c in table.columns if c.show == "value"]
    for name in report.mail.columns:
        if name not in shown:
            raise ReportError(f"{where}: column {name!r} is not a value column of table {table.id!r}; "
                              f"valid: {', '.join(shown)}")


def _check_query(report: Report, query: Query, catalog: Catalog, where: str) -> None:
    if query.period not in PERIODS:
        raise ReportError(f"{where}: period {query.period!r} is not one of {', '.join(PERIODS)}")
    for how in query.compare:
        if how not in COMPARE:
            raise ReportError(f"{where}: compare {how!r} is not one of {', '.join(COMPARE)}")
    geo = {REGION, *GEOGRAPHIES.values()}
    if report.per == "region" and geo & (set(query.by) | {d for d, _ in query.where}):
        raise ReportError(f"{where}: a per-region report breaks every query down by region itself; "
                          f"leave {', '.join(sorted(geo & set(query.by))) or 'the region'} out")
    for dim in query.by:
        if dim != REGION and dim not in DIMENSIONS:
            raise ReportError(f"{where}: unknown dimension {dim!r}; valid: {REGION}, {', '.join(DIMENSIONS)}")
    for geography, level in GEOGRAPHIES.items():
        by = ((level,) if report.per == "region" else ()) + query.dims(geography)
        request = Request(query.measures, by, query.where, date(2000, 1, 1), date(2000, 1, 1))
        try:
            validate(request, catalog)
        except QueryError as exc:
            raise ReportError(f"{where}: {exc}") from None


def _time_dims(query: Query) -> list[str]:
    return [d for d in query.by if d in DIMENSIONS and DIMENSIONS[d].is_time]


def _check_dims(block: Block, query: Query, shown: set[str], where: str) -> None:
    """The query's dimensions are those the block shows, plus at most a time dimension of one period."""
    by = set(query.by)
    missing = shown - by
    if missing:
        raise ReportError(f"{where}: query {query.name!r} is not broken down by {', '.join(sorted(missing))}")
    for dim in by - shown:
        if dim in _time_dims(query) and PERIODS[query.period] == dim:
            continue
        raise ReportError(f"{where}: query {query.name!r} is broken down by {dim}, which the block does not show "
                          f"(a time dimension is allowed when the period is one of its periods)")


def _check_indicator(name: str, query: Query, catalog: Catalog, where: str) -> None:
    if name not in catalog:
        raise ReportError(f"{where}: unknown indicator {name!r}; valid: {', '.join(catalog.names())}")
    if name not in query.measures:
        raise ReportError(f"{where}: indicator {name!r} is not among the measures of query {query.name!r} "
                          f"({', '.join(query.measures)})")


def _check_block(report: Report, block: Block, catalog: Catalog, where: str) -> None:
    query = report.query(block.query)
    if isinstance(block, Tiles):
        _check_dims(block, query, set(), where)
        for tile in block.tiles:
            _check_indicator(tile.indicator, query, catalog, where)
            if tile.good not in GOOD:
                raise ReportError(f"{where}: good {tile.good!r} is not one of {', '.join(GOOD)}")
    elif isinstance(block, Gauges):
        _check_dims(block, query, set(), where)
        for gauge in block.gauges:
            for name in (gauge.value, gauge.target, gauge.ratio):
                _check_indicator(name, query, catalog, where)
    elif isinstance(block, Table):
        _check_table(report, block, catalog, where)
    elif isinstance(block, Chart):
        _check_chart(block, query, catalog, where)


def _check_table(report: Report, block: Table, catalog: Catalog, where: str) -> None:
    if block.pivot:
        if block.columns or not block.value:
            raise ReportError(f"{where}: a pivot table has a 'value' indicator and no 'columns'")
        if block.pivot == block.rows:
            raise ReportError(f"{where}: rows and pivot are the same dimension")
        query = report.query(block.query)
        _check_dims(block, query, {block.rows, block.pivot}, where)
        _check_indicator(block.value, query, catalog, where)
        return
    if not block.columns or block.value:
        raise ReportError(f"{where}: a table has 'columns' (indicators); 'value' goes with 'pivot'")
    for column in block.columns:
        query = report.query(column.query)
        _check_dims(block, query, {block.rows}, where)
        _check_indicator(column.indicator, query, catalog, where)
        if column.show not in SHOWS:
            raise ReportError(f"{where}: show {column.show!r} is not one of {', '.join(SHOWS)}")
        needed = SHOWS[column.show]
        if needed and needed not in query.compare:
            raise ReportError(f"{where}: column {column.indicator} shows {column.show}, "
                              f"but query {query.name!r} does not compare with {needed!r}")


def _check_chart(block: Chart, query: Query, catalog: Catalog, where: str) -> None:
    if block.chart not in CHARTS:
        raise ReportError(f"{where}: chart {block.chart!r} is not one of {', '.join(CHARTS)}")
    if block.series and len(block.values) != 1:
        raise ReportError(f"{where}: a chart with series by {block.series} shows exactly one indicator")
    if block.series == block.x:
        raise ReportError(f"{where}: x and series are the same dimension")
    if block.reference and block.reference not in REFERENCES:
        raise ReportError(f"{where}: reference {block.reference!r} is not one of {', '.join(REFERENCES)}")
    _check_dims(block, query, {block.x} | ({block.series} if block.series else set()), where)
    formats = set()
    for name in block.values:
        _check_indicator(name, query, catalog, where)
        formats.add(catalog[name].format)
    if len(formats) > 1:
        raise ReportError(f"{where}: the indicators of one chart share a format (got {', '.join(sorted(formats))})")
