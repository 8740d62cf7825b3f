"""Report declarations: the built-in reports parse; a user adds or replaces a report in YAML; errors say where."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

import pilotage.cubes  # noqa: F401  (first: importing measures.catalog alone is a circular import)
from pilotage.measures.catalog import load_catalog
from pilotage.reports.data import needed_queries
from pilotage.reports.declarations import Chart, ReportError, Table, Tiles, get_report, load_reports


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


MINIMAL = """
    report: mine
    title: Mon rapport
    per: {per}
    queries:
      q:
        measures: [entries, stock]
        by: [{by}]
        period: week
    blocks:
      - id: t
        type: table
        title: Ma table
        query: q
        rows: {by}
        columns: [entries, stock]
"""


def test_builtin_reports(catalog):
    reports = load_reports(catalog=catalog)
    assert {"daily", "weekly-regional"} <= set(reports)
    daily, regional = reports["daily"], reports["weekly-regional"]
    assert (daily.per, daily.file_name, regional.per, regional.file_name) == ("nation", "quotidien", "region", "hebdo")
    assert {type(b) for b in daily.blocks} >= {Tiles, Table, Chart}
    assert {b.chart for b in daily.blocks if isinstance(b, Chart)} == {"line", "bar", "stacked_bar"}
    assert "physical_envelope" in daily.indicators()
    with pytest.raises(dataclasses.FrozenInstanceError):
        daily.title = "x"


def test_tables_with_totals_need_the_query_without_their_dimensions(catalog):
    keys = needed_queries(get_report("daily", catalog=catalog))
    assert ("ytd_by_region_and_measure", ()) in keys
    assert ("ytd_by_region_and_measure", ("region",)) in keys
    assert ("ytd_by_region_and_measure", ("measure",)) in keys
    assert ("ytd_by_region_and_measure", ("region", "measure")) in keys
    assert len(keys) == len(set(keys))


def test_a_user_adds_a_report_in_yaml(tmp_path, catalog):
    write(tmp_path, "mine.yml", MINIMAL.format(per="region", by="department"))
    reports = load_reports([tmp_path], catalog)
    assert reports["mine"].per == "region" and reports["mine"].blocks[0].columns[1].indicator == "stock"
    assert "daily" in reports


def test_a_user_replaces_a_builtin_report_by_its_name(tmp_path, catalog):
    write(tmp_path, "daily.yml", MINIMAL.format(per="nation", by="region").replace("report: mine", "report: daily"))
    assert get_report("daily", [tmp_path], catalog).title == "Mon rapport"


def test_a_user_adds_a_block_to_a_builtin_report(tmp_path, catalog):
    write(tmp_path, "more.yml", """
        report: daily
        extends: daily
        queries:
          by_sex:
            measures: [entries, avg_weekly_hours]
            by: [beneficiary_sex]
            period: year
        blocks:
          - {id: semaine, type: tiles, title: Cette semaine, query: week, tiles: [stock]}
          - {id: sexe, type: table, title: Entrées par sexe, query: by_sex, rows: beneficiary_sex,
             columns: [entries, avg_weekly_hours]}
    """)
    builtin, extended = get_report("daily", catalog=catalog), get_report("daily", [tmp_path], catalog)
    assert [b.id for b in extended.blocks] == [b.id for b in builtin.blocks] + ["sexe"]
    assert extended.blocks[0].title == "Cette semaine" and len(extended.blocks[0].tiles) == 1
    assert extended.title == builtin.title and extended.query("by_sex").period == "year"
    assert extended.source.endswith("more.yml") and "avg_weekly_hours" in extended.indicators()
    write(tmp_path, "more.yml", "report: mine\nextends: nope\n")
    with pytest.raises(ReportError, match="extends unknown report 'nope'"):
        load_reports([tmp_path], catalog)


def test_reports_folder_from_the_environment(tmp_path, catalog, monkeypatch):
    write(tmp_path, "mine.yml", MINIMAL.format(per="nation", by="measure"))
    monkeypatch.setenv("PILOTAGE_REPORTS", str(tmp_path))
    assert "mine" in load_reports(catalog=catalog)


@pytest.mark.parametrize("change, message", [
    (("columns: [entries, stock]", "columns: [entries, nope]"), "block 't': unknown indicator 'nope'"),
    (("columns: [entries, stock]", "columns: [entries, exits]"),
     "block 't': indicator 'exits' is not among the measures of query 'q'"),
    (("query: q", "query: other"), "block 't': unknown query 'other'"),
    (("columns: [entries, stock]", "columns: [{indicator: entries, show: vs_year}]"),
     "does not compare with 'year'"),
    (("period: week", "period: fortnight"), "query 'q': period 'fortnight' is not one of"),
    (("measures: [entries, stock]", "measures: [entries, stock, physical_envelope]"),
     "query 'q': physical_envelope is computed on envelopes"),
    (("type: table", "type: gauge"), "block 't': type 'gauge' is not one of"),
    (("rows: department", "rows: department\n    colour: red"), "block 't': unknown key(s) colour"),
    (("rows: department", "rows: measure"), "query 'q' is not broken down by measure"),
])
def test_errors_name_the_file_the_report_the_block_and_the_problem(tmp_path, catalog, change, message):
    text = textwrap.dedent(MINIMAL.format(per="region", by="department")).replace(*change)
    path = write(tmp_path, "mine.yml", text)
    with pytest.raises(ReportError) as error:
        load_reports([path], catalog)
    assert str(error.value).startswith(f"{path}: report 'mine'")
    assert message in str(error.value)


def test_a_per_region_report_breaks_down_by_region_itself(tmp_path, catalog):
    path = write(tmp_path, "mine.yml", MINIMAL.format(per="region", by="region"))
    with pytest.raises(ReportError, match="breaks every query down by region itself"):
        load_reports([path], catalog)


def test_not_yaml_and_duplicates(tmp_path, catalog):
    (tmp_path / "a").mkdir()
    bad = write(tmp_path / "a", "bad.yml", "report: [unclosed")
    with pytest.raises(ReportError, match="not valid YAML"):
        load_reports([bad], catalog)
    (tmp_path / "b").mkdir()
    write(tmp_path / "b", "one.yml", MINIMAL.format(per="nation", by="measure"))
    write(tmp_path / "b", "two.yml", MINIMAL.format(per="nation", by="measure"))
    with pytest.raises(ReportError, match="already declared"):
        load_reports([tmp_path / "b"], catalog)
    with pytest.raises(ReportError, match="unknown report 'nope'; valid: daily"):
        get_report("nope", catalog=catalog)
    with pytest.raises(ReportError, match="no such report file or folder"):
        load_reports([tmp_path / "missing"], catalog)
