"""The same cube on Spark: the golden requests answered by PySpark (local mode, over the lake that
`pilotage export` writes) equal the DuckDB cube's answers to the cent -- and the DuckDB answers are
themselves checked against hand-written SQL in test_cube_golden.py. Every indicator kind is asked
(flow, stock with its cumulative window, fixed, ratio, average, to-date), with scopes, filters and
known_at; what the Spark engine cannot do says so.
"""

from __future__ import annotations

from datetime import date

import pytest

from pilotage.cubes import Cube
from pilotage.cubes.spark import EngineError, SparkCube, to_spark
from pilotage.etl.generate import generate_drops
from pilotage.etl.loader import load_drops
from pilotage.lake import export_lake
from pilotage.warehouse import Warehouse

REQUESTS = [
    dict(measures=["entries", "exits", "early_exits"], by=["region_2005", "week"], start="2006-01-01"),
    dict(measures=["stock"], by=["department", "month"]),
    dict(measures=["stock", "entries_ytd"], by=["region_2016", "quarter"]),
    dict(measures=["payments_eur", "payments_ytd_eur"], by=["measure", "month"]),
    dict(measures=["physical_envelope", "financial_envelope_eur", "physical_realisation",
                   "financial_consumption"], by=["region_2005", "measure"]),
    dict(measures=["avg_subsidy_rate", "avg_weekly_hours"], by=["sector", "age_band"]),
    dict(measures=["prescriptions", "prescriptions_converted", "conversion_rate"], by=["region_2005"]),
    dict(measures=["entries", "stock"], by=["beneficiary_category", "year"], where={"measure": ["CAE", "CIE"]}),
    dict(measures=["entries", "payments_eur"], by=["department", "day"], scope="region_2005:25",
         start="2006-03-01"),
    dict(measures=["stock", "financial_consumption"], by=["region_2005"], known_at="2006-02-15"),
    dict(measures=["entries", "stock", "financial_consumption"]),
]


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark")
    generate_drops(root / "drops", date(2006, 1, 1), date(2006, 4, 28), scale=0.02, seed=7)
    warehouse = Warehouse(root / "w.duckdb")
    assert load_drops(warehouse, [root / "drops"]).ok
    export_lake(warehouse, root / "lake")
    spark = SparkCube(root / "lake", master="local[2]")
    yield Cube(warehouse), spark
    spark.spark.stop()


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: "+".join(r["measures"]) + "|" + ",".join(r.get("by", [])))
def test_spark_answers_equal_duckdb_to_the_cent(cubes, request_):
    duck, spark = cubes
    expected = duck.query(**request_).to_pylist()
    got = spark.query(**request_).to_pylist()
    assert expected, "the request must have rows"
    assert got == expected


def test_as_of_and_labels(cubes):
    duck, spark = cubes
    assert spark.as_of() == duck.as_of() == date(2006, 4, 28)
    assert spark.as_of("2006-02-15") == duck.as_of("2006-02-15")
    labelled = spark.query(["entries"], by=["region_2005"], labels=True)
    assert labelled.column_names == ["region_2005", "region_2005_name", "entries"]
    assert labelled.to_pylist() == duck.query(["entries"], by=["region_2005"], labels=True).to_pylist()


@pytest.mark.parametrize("how", ["previous", "year"])
def test_comparisons_equal_duckdb(cubes, how):
    duck, spark = cubes
    args = dict(measures=["entries", "stock"], by=["region_2005", "week"], start="2006-03-01")
    assert spark.compare(**args, how=how).to_pylist() == duck.compare(**args, how=how).to_pylist()


def test_a_lake_is_required():
    with pytest.raises(EngineError, match="pilotage export"):
        SparkCube("/nonexistent-lake")


def test_a_report_renders_on_spark(cubes, tmp_path):
    from openpyxl import load_workbook

    from pilotage.reports import render_report

    duck, spark = cubes
    on_spark = render_report(spark, "weekly-regional", region="25", formats=["xlsx"], out_dir=tmp_path / "spark")
    on_duck = render_report(duck, "weekly-regional", region="25", formats=["xlsx"], out_dir=tmp_path / "duck")

    def cells(path):
        return [[c for c in row] for sheet in load_workbook(path).worksheets
                for row in sheet.iter_rows(values_only=True)]

    assert [p.name for p in on_spark] == [p.name for p in on_duck]
    # the workbooks hold the same figures (their "generated at" line aside)
    assert [r for r in cells(on_spark[0]) if "Généré" not in str(r)] == \
        [r for r in cells(on_duck[0]) if "Généré" not in str(r)]


def test_parameters_are_bound_as_typed_literals():
    sql = to_spark("SELECT * FROM t WHERE d BETWEEN $start AND $end AND c IN ($c0, $c1)",
                   {"start": date(2006, 1, 1), "end": date(2006, 3, 31), "c0": "25", "c1": "O'Brien"})
    assert sql == ("SELECT * FROM t WHERE d BETWEEN CAST('2006-01-01' AS DATE) AND CAST('2006-03-31' AS DATE) "
                   "AND c IN ('25', 'O\\'Brien')")


def test_cli_engine_spark(cubes, tmp_path):
    import subprocess
    import sys

    duck, spark = cubes
    lake = duck.warehouse.path.parent / "lake"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pilotage.cli", "-w", str(duck.warehouse.path), "query",
                               "-m", "entries", "-m", "stock", "--by", "region_2005", "--format", "csv", *args],
                              capture_output=True, text=True, timeout=300)

    on_spark, on_duckdb = run("--engine", "spark", "--lake", str(lake)), run()
    assert on_spark.returncode == 0, on_spark.stderr
    assert on_spark.stdout == on_duckdb.stdout and on_spark.stdout.count("\n") == 28
    compared = run("--engine", "spark", "--lake", str(lake), "--compare", "year")
    assert compared.returncode == 0 and compared.stdout == run("--compare", "year").stdout
    assert run("--engine", "spark").returncode == 2  # no --lake
