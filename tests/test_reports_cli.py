"""`pilotage report NAME`: the command writes the files and says where; user errors exit 2 with the reason."""

from __future__ import annotations


import pytest
from click.testing import CliRunner

from dropkit import report_warehouse
from pilotage.cli import main

pytestmark = pytest.mark.skipif("report" not in main.commands, reason="`pilotage report` is not in pilotage/cli.py yet")



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    warehouse = report_warehouse(tmp_path_factory)

    def invoke(*args: str):
        return CliRunner().invoke(main, ["-w", str(warehouse), "report", *args])

    return invoke


def test_daily(run, tmp_path):
    result = run("daily", "--as-of", "2006-03-15", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quotidien_2006-03-15.html", "quotidien_2006-03-15.xlsx"]
    assert str(tmp_path / "quotidien_2006-03-15.html") in result.output


def test_weekly_regional(run, tmp_path):
    result = run("weekly-regional", "--week", "2006-W10", "--region", "25", "--region", "23", "--format", "xlsx",
                 "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hebdo_region-23_2006-W10.xlsx",
                                                          "hebdo_region-25_2006-W10.xlsx"]
    result = run("weekly-regional", "--geography", "2016", "--region", "28", "--format", "html", "--out",
                 str(tmp_path / "2016"))
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "2016").iterdir()] == ["hebdo_region2016-28_2006-W13.html"]


@pytest.mark.parametrize("args, message", [
    (["daily", "--region", "25"], "is national: it takes no region"),
    (["weekly-regional", "--week", "2006-11"], "not an ISO week"),
    (["weekly-regional", "--region", "99"], "unknown region_2005 code(s) 99"),
    (["nope"], "unknown report 'nope'"),
    (["daily", "--format", "pdf"], "--format"),
])
def test_user_errors(run, tmp_path, args, message):
    result = run(*args, "--out", str(tmp_path))
    assert result.exit_code == 2 and message in result.output
