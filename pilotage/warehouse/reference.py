"""Reference data shipped in the package: departments, measures, calendar.

The department → region table is a copy of the interface's reference file
(users do not have the interface folder). The dimensions are rewritten at
every write session, so a release that corrects the reference corrects every
warehouse at its next load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources

import duckdb

CALENDAR_FIRST_DAY = date(1990, 1, 1)
CALENDAR_LAST_DAY = date(2045, 12, 31)


@dataclass(frozen=True)
class Measure:
    code: str
    label: str
    sector_code: str
    sector_label: str


MEASURES: tuple[Measure, ...] = (
    Measure("CAE", "Contrat d'accompagnement dans l'emploi", "NM", "Secteur non marchand"),
    Measure("CAV", "Contrat d'avenir", "NM", "Secteur non marchand"),
    Measure("CIE", "Contrat initiative emploi", "M", "Secteur marchand"),
    Measure("CIRMA", "Contrat d'insertion - revenu minimum d'activité", "M", "Secteur marchand"),
)
MEASURE_CODES: tuple[str, ...] = tuple(m.code for m in MEASURES)


def departments_csv() -> str:
    """Filesystem path of the packaged department reference."""
    return str(resources.files("pilotage.warehouse").joinpath("reference/departments.csv"))


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    region_2005_code: str
    region_2005_name: str
    region_2016_code: str
    region_2016_name: str


@cache
def departments() -> tuple[Department, ...]:
    """The reference table, in file order (small: read once per process)."""
    con = duckdb.connect()
    rows = con.sql(_READ_DEPARTMENTS.format(path=_quote(departments_csv()))).fetchall()
    con.close()
    return tuple(Department(*row) for row in rows)


def department_codes() -> tuple[str, ...]:
    return tuple(d.code for d in departments())


def region_2005_codes() -> tuple[str, ...]:
    return tuple(sorted({d.region_2005_code for d in departments()}))


_READ_DEPARTMENTS = """
SELECT department_code, department_name, region_2005_code, region_2005_name,
       region_2016_code, region_2016_name
FROM read_csv({path}, delim=';', header=true, auto_detect=false, columns={{
    'department_code': 'VARCHAR', 'department_name': 'VARCHAR',
    'region_2005_code': 'VARCHAR', 'region_2005_name': 'VARCHAR',
    'region_2016_code': 'VARCHAR', 'region_2016_name': 'VARCHAR'}})
"""

_CALENDAR = """
INSERT INTO dim_calendar
SELECT d::DATE AS day,
       isoyear(d) AS iso_year,
       weekofyear(d) AS iso_week,
       strftime(d, '%G-W%V') AS week_label,
       (d - (isodow(d) - 1) * INTERVAL 1 DAY)::DATE AS week_start,
       month(d) AS month,
       strftime(d, '%Y-%m') AS month_label,
       quarter(d) AS quarter,
       year(d) || '-Q' || quarter(d) AS quarter_label,
       year(d) AS year,
       isodow(d) AS day_of_week
FROM generate_series(?::DATE, ?::DATE, INTERVAL 1 DAY) AS t(d)
"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def refresh_reference(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite the dimension tables from the packaged reference."""
    con.execute("DELETE FROM dim_department")
    con.execute("INSERT INTO dim_department " + _READ_DEPARTMENTS.format(path=_quote(departments_csv())))
    con.execute("DELETE FROM dim_measure")
    con.executemany(
        "INSERT INTO dim_measure VALUES (?, ?, ?, ?)",
        [(m.code, m.label, m.sector_code, m.sector_label) for m in MEASURES],
    )
    have = con.sql("SELECT min(day), max(day), count(*) FROM dim_calendar").fetchall()[0]
    expected_days = (CALENDAR_LAST_DAY - CALENDAR_FIRST_DAY).days + 1
    if have != (CALENDAR_FIRST_DAY, CALENDAR_LAST_DAY, expected_days):
        con.execute("DELETE FROM dim_calendar")
        con.execute(_CALENDAR, [CALENDAR_FIRST_DAY, CALENDAR_LAST_DAY])
