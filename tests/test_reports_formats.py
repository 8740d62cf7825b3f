"""French number and date formats, Excel number formats, and the periods a report covers."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from pilotage.reports.declarations import ReportError
from pilotage.reports.formats import (EXCEL_FORMATS, MISSING, SPACE, format_datetime, format_period, format_value,
                                      format_week, short_week)
from pilotage.reports.periods import period_range, report_end, week_bounds, year_elapsed


def fr(value, kind: str) -> str:
    """The formatted text with the no-break spaces shown as plain spaces."""
    return format_value(value, kind).replace(SPACE, " ")


@pytest.mark.parametrize("value, kind, expected", [
    (1234567, "integer", "1 234 567"),
    (0, "integer", "0"),
    (999, "integer", "999"),
    (1000, "integer", "1 000"),
    (-1234, "integer", "-1 234"),
    (0.125, "percent", "12,5 %"),
    (1, "percent", "100,0 %"),
    (0.0005, "percent", "0,1 %"),  # half up
    (1234.56, "euro", "1 234,56 €"),
    (Decimal("209351715.14"), "euro", "209 351 715,14 €"),
    (Decimal("-100.00"), "euro", "-100,00 €"),
    (26.25, "decimal", "26,3"),
    (0.125, "change", "+12,5 %"),
    (-0.03, "change", "-3,0 %"),
    (-0.0004, "change", "0,0 %"),  # no "-0,0"
    (0, "change", "0,0 %"),
    (date(2006, 3, 14), "date", "14/03/2006"),
    ("=1+1", "text", "=1+1"),
])
def test_french_formats(value, kind, expected):
    assert fr(value, kind) == expected


def test_spaces_are_no_break_spaces_and_missing_values_a_dash():
    assert format_value(1234567, "integer") == "1\u00a0234\u00a0567"
    assert format_value(0.125, "percent") == "12,5\u00a0%"
    assert format_value(None, "euro") == MISSING
    assert format_value(float("nan"), "percent") == MISSING
    with pytest.raises(ValueError, match="unknown value kind"):
        format_value(1, "roman")


def test_dates_and_periods():
    assert format_week("2006-W11") == "semaine 11"
    assert format_week("2006-W01", with_year=True) == "semaine 1 de 2006"
    assert short_week("2004-W53") == "S53 2004"
    assert format_datetime(datetime(2006, 3, 14, 8, 5)) == "14/03/2006 à 08:05"
    assert format_period("month", "2006-03") == "mars 2006"
    assert format_period("quarter", "2006-Q1") == "1er trimestre 2006"
    assert format_period("day", "2006-03-14") == "14/03/2006"


def test_excel_number_formats():
    assert EXCEL_FORMATS["integer"] == "#,##0"
    assert EXCEL_FORMATS["euro"] == '#,##0.00\\ "€"'
    assert EXCEL_FORMATS["percent"] == "0.0\\ %"
    assert EXCEL_FORMATS["date"] == "dd/mm/yyyy"


def test_periods_end_on_the_report_day():
    wednesday = date(2006, 3, 15)
    assert period_range("day", wednesday) == (wednesday, wednesday)
    assert period_range("week", wednesday) == (date(2006, 3, 13), wednesday)
    assert period_range("month", wednesday) == (date(2006, 3, 1), wednesday)
    assert period_range("year", wednesday) == (date(2006, 1, 1), wednesday)
    first, last = period_range("52_weeks", wednesday)
    assert first == date(2005, 3, 21) and first.weekday() == 0 and last == wednesday
    assert week_bounds("2004-W53") == (date(2004, 12, 27), date(2005, 1, 2))


def test_report_end_is_at_most_the_data_date():
    as_of = date(2006, 3, 15)
    assert report_end(as_of) == as_of
    assert report_end(as_of, week="2006-W10") == date(2006, 3, 12)  # a whole week: its Sunday
    assert report_end(as_of, week="2006-W11") == as_of  # the week in progress: clipped
    assert report_end(as_of, day=date(2006, 2, 1)) == date(2006, 2, 1)
    with pytest.raises(ReportError, match="after the data date"):
        report_end(as_of, day=date(2006, 3, 16))
    with pytest.raises(ReportError, match="starts after the data date"):
        report_end(as_of, week="2006-W12")
    with pytest.raises(ReportError, match="not an ISO week"):
        report_end(as_of, week="2006-11")


def test_share_of_the_year_elapsed():
    assert year_elapsed(date(2006, 1, 1)) == pytest.approx(1 / 365)
    assert year_elapsed(date(2006, 12, 31)) == 1
    assert year_elapsed(date(2004, 12, 31)) == 1  # leap year
