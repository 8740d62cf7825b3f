"""The dates a report covers: its last day, and each query's period ending on it.

>>> period_range("week", date(2006, 3, 14))
(datetime.date(2006, 3, 13), datetime.date(2006, 3, 14))
>>> week_bounds("2006-W11")
(datetime.date(2006, 3, 13), datetime.date(2006, 3, 19))
"""

from __future__ import annotations

from datetime import date, timedelta

from pilotage.reports.declarations import PERIODS, ReportError


def week_bounds(label: str) -> tuple[date, date]:
    """Monday and Sunday of an ISO week labelled YYYY-Www."""
    try:
        year, week = label.split("-W")
        monday = date.fromisocalendar(int(year), int(week), 1)
    except ValueError:
        raise ReportError(f"{label!r} is not an ISO week YYYY-Www (e.g. 2006-W11)") from None
    return monday, monday + timedelta(days=6)


def week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def report_end(as_of: date, day: date | None = None, week: str | None = None) -> date:
    """The last day a report shows: the day asked, or the end of the week asked, at most the data date."""
    if day and week:
        raise ReportError("ask for a day or a week, not both")
    if week:
        monday, sunday = week_bounds(week)
        if monday > as_of:
            raise ReportError(f"week {week} starts after the data date {as_of.isoformat()}")
        return min(sunday, as_of)
    if day and day > as_of:
        raise ReportError(f"{day.isoformat()} is after the data date {as_of.isoformat()} (the newest drop loaded)")
    return day or as_of


def period_range(period: str, end: date) -> tuple[date, date]:
    """First and last day of a named period ending on `end`."""
    if period not in PERIODS:
        raise ReportError(f"period {period!r} is not one of {', '.join(PERIODS)}")
    monday = end - timedelta(days=end.weekday())
    first = {
        "day": end,
        "week": monday,
        "month": end.replace(day=1),
        "year": date(end.year, 1, 1),
        "52_weeks": monday - timedelta(weeks=51),
    }[period]
    return first, end


def year_elapsed(end: date) -> float:
    """Share of the calendar year elapsed at the end of `end`: the pace an envelope is judged by."""
    days = (date(end.year + 1, 1, 1) - date(end.year, 1, 1)).days
    return ((end - date(end.year, 1, 1)).days + 1) / days
