"""Rendering a declared report to files: HTML and/or Excel, one set per region for per-region reports.

    from pilotage.cubes import Cube, Scope, ScopeError
    from pilotage.reports import render_report

    render_report(Cube("w.duckdb"), "weekly-regional", week="2006-W11", out_dir="out")
    # -> out/hebdo_region-11_2006-W11.html, out/hebdo_region-11_2006-W11.xlsx, ...

All the report's queries run once, before any file is written (see data.py),
on one connection to the warehouse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable

from pilotage.cubes import Cube, Scope, ScopeError
from pilotage.cubes.cube import parse_date
from pilotage.cubes.model import members
from pilotage.reports.data import fetch
from pilotage.reports.declarations import GEOGRAPHIES, Report, ReportError, get_report
from pilotage.reports.formats import format_date, format_week
from pilotage.reports.periods import report_end, week_label, year_elapsed
from pilotage.reports.views import ReportView, build_view

FORMATS = ("html", "xlsx")


def report_regions(report: Report, region: str | Iterable[str] | None = None,
                   geography: str = "2005") -> tuple[str, ...] | None:
    """The region codes a per-region report is rendered for (all by default); None for a national report."""
    if geography not in GEOGRAPHIES:
        raise ReportError(f"geography {geography!r} is not one of {', '.join(GEOGRAPHIES)}")
    codes = (region,) if isinstance(region, str) else tuple(region or ())
    if report.per != "region":
        if codes:
            raise ReportError(f"report {report.name!r} is national: it takes no region")
        return None
    valid = [code for code, _ in members(GEOGRAPHIES[geography])]
    unknown = [c for c in codes if c not in valid]
    if unknown:
        raise ReportError(f"unknown {GEOGRAPHIES[geography]} code(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(codes)) if codes else tuple(valid)


def file_stem(report: Report, end: date, region: str | None, geography: str, week: str | None) -> str:
    """quotidien_2006-03-14, hebdo_region-25_2006-W11, hebdo_region2016-28_2006-W11, quotidien_geo2016_..."""
    parts = [report.file_name]
    if region is not None:
        parts.append(f"region-{region}" if geography == "2005" else f"region{geography}-{region}")
    elif geography != "2005":
        parts.append(f"geo{geography}")
    parts.append(week_label(end) if week or report.per == "region" else end.isoformat())
    return "_".join(parts)


def period_text(end: date) -> str:
    monday = end - timedelta(days=end.weekday())
    week = format_week(week_label(end), with_year=True).capitalize()
    return f"{week}, du {format_date(monday)} au {format_date(end)}"


@dataclass(frozen=True)
class Prepared:
    """One report (a region's, or the nation's) ready to be written: its file stem and its view."""

    region: str | None
    stem: str
    view: ReportView


def prepare_views(cube: Cube, name: str, as_of: date | str | None = None, known_at: date | str | None = None,
                  region: str | Iterable[str] | None = None, geography: str = "2005", week: str | None = None, *,
                  scope: Scope | str | None = None, definitions: list[str | os.PathLike] | None = None,
                  generated_at: datetime | None = None) -> list[Prepared]:
    """Run the report's queries (once, for all the regions asked) and build each region's view.

    The arguments are render_report's; the emails use the views too (their
    body shows some of the blocks), so that the body and the attached files
    hold the same figures.
    """
    report = get_report(name, definitions, cube.catalog)
    regions = report_regions(report, region, geography)
    known = _date(known_at, "known_at")
    with cube.reading():
        data_date = cube.as_of(known)
        end = report_end(data_date, _date(as_of, "as_of"), week)
        answers = fetch(cube, report, end, known, geography, regions, _scope(scope))
    generated_at = generated_at or datetime.now().replace(microsecond=0)
    return [Prepared(code, file_stem(report, end, code, geography, week),
                     build_view(report, cube.catalog, region_answers, geography=geography, end=end, as_of=data_date,
                                known_at=known, year_elapsed=year_elapsed(end), generated_at=generated_at,
                                period_text=period_text(end)))
            for code, region_answers in answers.items()]


def write_views(prepared: Iterable[Prepared], formats: Iterable[str] = FORMATS, out_dir: str | os.PathLike = ".",
                templates: list[str | os.PathLike] | None = None,
                progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write each prepared report as HTML and/or Excel into out_dir; return the paths."""
    formats = _formats(formats)
    from pilotage.reports.excel import write_workbook
    from pilotage.reports.html import write_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for item in prepared:
        if "html" in formats:
            paths.append(write_html(item.view, out / f"{item.stem}.html", templates))
        if "xlsx" in formats:
            paths.append(write_workbook(item.view, out / f"{item.stem}.xlsx"))
        if progress:
            progress(1)
    return paths


def render_report(cube: Cube, name: str, as_of: date | str | None = None, known_at: date | str | None = None,
                  formats: Iterable[str] = FORMATS, out_dir: str | os.PathLike = ".",
                  region: str | Iterable[str] | None = None, geography: str = "2005", week: str | None = None,
                  progress: Callable[[int], None] | None = None, *,
                  scope: Scope | str | None = None, definitions: list[str | os.PathLike] | None = None,
                  templates: list[str | os.PathLike] | None = None,
                  generated_at: datetime | None = None) -> list[Path]:
    """Write the report's files into out_dir and return their paths.

    as_of: the day the report shows (default: the newest drop loaded, as
    known at known_at); week: an ISO week YYYY-Www instead, shown up to its
    Sunday (at most the data date); region: the code(s) of a per-region
    report (default: every region of the geography); progress is called with
    1 after each region's files (for a progress bar over report_regions());
    scope: restrict every figure to a part of the country (Scope or text
    like "region_2005:25"), for a recipient who may see only that part.
    """
    formats = _formats(formats)
    prepared = prepare_views(cube, name, as_of, known_at, region, geography, week, scope=scope,
                             definitions=definitions, generated_at=generated_at)
    return write_views(prepared, formats, out_dir, templates, progress)


def _formats(formats: Iterable[str]) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ReportError(f"unknown format(s) {', '.join(bad) or '(none)'}; valid: {', '.join(FORMATS)}")
    return formats


def _scope(scope: Scope | str | None) -> Scope | None:
    try:
        return Scope.parse(scope) if isinstance(scope, str) else scope
    except ScopeError as exc:
        raise ReportError(str(exc)) from None


def _date(value, name: str) -> date | None:
    return parse_date(value, name, ReportError)
