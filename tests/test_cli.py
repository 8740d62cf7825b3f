"""The command line, run in-process on a small real warehouse."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from dropkit import contract, envelope, payment, write_drop
from pilotage.cli import main


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_drop(root / "drops", "2006-03-13", {
        "contracts.csv": [contract("C1", department="14", start="2006-03-06"),
                          contract("C2", measure="CIE", department="76", start="2006-03-13", rate="0.40"),
                          contract("C3", department="75", start="2006-03-07")],
        "payments.csv": [payment("P1", "C1", paid="2006-03-10", amount="100.00")],
        "envelopes.csv": [envelope(2006, "25", "CAE", 1, "10", "1000.00", "2006-01-02")],
    })
    path = root / "w.duckdb"
    result = CliRunner().invoke(main, ["-w", str(path), "load", str(root / "drops")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(path)


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_status_json_has_the_documented_keys(warehouse):
    status = json.loads(run("-w", warehouse, "status", "--format", "json"))
    assert {"as_of", "drops_loaded", "contracts", "payments", "prescriptions", "envelopes", "rejected_rows",
            "held_payments"} <= set(status)
    assert (status["as_of"], status["drops_loaded"], status["contracts"], status["payments"]) == (
        "2006-03-13", 1, 3, 1)


def test_query_csv_has_one_column_per_dimension_then_per_indicator(warehouse):
    out = run("-w", warehouse, "query", "-m", "stock", "-m", "entries", "--by", "region_2016", "--by", "week",
              "--where", "region_2016=28,11", "--from", "2006-03-06", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out), delimiter=";"))
    assert rows[0] == ["region_2016", "week", "stock", "entries"]
    assert rows[1:] == [["11", "2006-W10", "1", "1"], ["11", "2006-W11", "1", "0"],
                        ["28", "2006-W10", "1", "1"], ["28", "2006-W11", "2", "1"]]


def test_query_labels_json_and_sql(warehouse):
    data = json.loads(run("-w", warehouse, "query", "-m", "entries", "--by", "measure", "--by", "region_2005",
                          "--where", "region_2005=25", "--from", "2006-01-01", "--labels", "--format", "json"))
    assert list(data[0]) == ["measure", "measure_name", "region_2005", "region_2005_name", "entries"]
    assert data[0]["region_2005_name"] == "Basse-Normandie" and data[0]["entries"] == 1
    sql = run("-w", warehouse, "query", "-m", "entries", "--where", "measure=CAE", "--sql")
    assert sql.startswith("WITH ") and "$w_measure_0" in sql and '"w_measure_0": "CAE"' in sql


def test_query_xlsx_is_typed(warehouse, tmp_path):
    target = tmp_path / "q.xlsx"
    run("-w", warehouse, "query", "-m", "entries", "-m", "financial_consumption", "--by", "region_2005",
        "--where", "region_2005=25", "--from", "2006-01-01", "--format", "xlsx", "--output", str(target))
    sheet = load_workbook(target).active
    assert [c.value for c in sheet[1]] == ["region_2005", "entries", "financial_consumption"]
    assert [c.value for c in sheet[2]] == ["25", 1, pytest.approx(0.1)]
    assert sheet["A2"].data_type == "s"


def test_query_compare_and_errors(warehouse):
    out = run("-w", warehouse, "query", "-m", "entries", "--by", "week", "--from", "2006-03-06",
              "--compare", "previous", "--format", "csv")
    assert out.splitlines()[0] == "week;entries;entries_previous;entries_change_pct"
    bad = run("-w", warehouse, "query", "-m", "financial_consumption", "--by", "department", code=2)
    assert "cannot be broken down by department" in bad
    assert "unknown indicator" in run("-w", warehouse, "query", "-m", "nope", code=2)


def test_indicators_lists_every_declaration():
    names = [row["name"] for row in json.loads(run("indicators", "--format", "json"))]
    for name in ("entries", "exits", "early_exits", "stock", "avg_subsidy_rate", "avg_weekly_hours", "payments_eur",
                 "physical_envelope", "financial_envelope_eur", "entries_ytd", "payments_ytd_eur",
                 "physical_realisation", "financial_consumption", "prescriptions", "conversion_rate"):
        assert name in names


def test_missing_warehouse_is_a_clear_error_with_its_exit_code(tmp_path):
    out = run("-w", str(tmp_path / "none.duckdb"), "status", code=3)
    assert "no warehouse at" in out


def test_every_command_is_documented_with_an_example():
    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                assert command.help, prefix + name
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield prefix + name, command

    names = []
    for name, command in commands(main):
        names.append(name)
        assert command.help, name
        assert "Example" in command.help, name
    assert {"load", "query", "report", "send weekly", "daily"} <= set(names)
