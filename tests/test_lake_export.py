"""The lake export: the warehouse's tables as Hive-partitioned Parquet, read back by DuckDB's own Parquet
reader (as any engine would), equal to the warehouse; incremental: only what changed is written again.

Hand-made drops: contracts C1 (started 2005-12-01) and C2 (2006-03-13), a payment in December 2005 and
one in March 2006, and an envelope for 2006: contracts and payments partitions for 2005 and 2006.
"""

from __future__ import annotations

import subprocess
import sys

import duckdb

from dropkit import contract, envelope, load, payment, warehouse, write_drop
from pilotage.lake import TABLES, export_lake


def drops(root):
    first = write_drop(root / "drops", "2006-03-13", {
        "contracts.csv": [contract("C1", start="2005-12-01", planned_end="2006-05-31"),
                          contract("C2", department="76", start="2006-03-13")],
        "payments.csv": [payment("P1", "C1", "2005-12", "2005-12-20", "816.10"),
                         payment("P2", "C1", "2006-02", "2006-03-13", "816.10")],
        "envelopes.csv": [envelope(2006, "25", "CAE")]})
    second = write_drop(root / "drops", "2006-03-14", {
        "contracts.csv": [contract("C2", version=2, department="76", start="2006-03-13", actual_end="2006-03-14",
                                   end_reason="RUPTURE_SALARIE", status="ENDED")],
        "payments.csv": [payment("P3", "C2", "2006-03", "2006-03-14", "400.00")]})
    return first, second


def read(lake, table: str) -> list[tuple]:
    partitioned = next(t for t in TABLES if t.name == table).partitioned
    pattern = f"{lake}/{table}/*/*.parquet" if partitioned else f"{lake}/{table}/*.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)").fetchall()


def table_rows(path, table: str) -> list[tuple]:
    with warehouse(path).connect() as con:
        return con.sql(f"SELECT * FROM {table}").fetchall()


def test_the_lake_holds_every_table_and_reads_back_equal(tmp_path):
    first, second = drops(tmp_path)
    assert load(tmp_path / "w.duckdb", first, second).ok
    result = export_lake(warehouse(tmp_path / "w.duckdb"), tmp_path / "lake")
    assert "contracts/year=2005" in result.written and "contracts/year=2006" in result.written
    assert "payments/year=2005" in result.written and "envelopes/year=2006" in result.written
    for table in ("contracts", "contract_versions", "payments", "dim_department", "dim_measure", "load_drops"):
        lake_rows = read(tmp_path / "lake", table)
        base = table_rows(tmp_path / "w.duckdb", table)
        assert base, table
        # the partition column comes last from the lake (hive): compare without it
        assert sorted(tuple(r[:len(base[0])]) for r in lake_rows) == sorted(base), table
    assert not (tmp_path / "lake" / "prescriptions").exists()  # an empty fact has no partition
    # envelopes: `year` is the partition column itself
    (row,) = duckdb.sql(f"SELECT year, region_code, physical_envelope FROM read_parquet("
                        f"'{tmp_path}/lake/envelopes/*/*.parquet', hive_partitioning = true)").fetchall()
    assert row == (2006, "25", 4000)
    # payments per year, by hand: 2005 one (816.10), 2006 two (816.10 + 400.00)
    by_year = duckdb.sql(f"SELECT year, count(*), sum(amount_eur) FROM read_parquet("
                         f"'{tmp_path}/lake/payments/*/*.parquet', hive_partitioning = true) GROUP BY 1 ORDER BY 1")\
        .fetchall()
    assert [(y, n, float(s)) for y, n, s in by_year] == [(2005, 1, 816.10), (2006, 2, 1216.10)]


def test_incremental_only_what_changed(tmp_path):
    first, second = drops(tmp_path)
    assert load(tmp_path / "w.duckdb", first).ok
    lake = tmp_path / "lake"
    export_lake(warehouse(tmp_path / "w.duckdb"), lake)
    again = export_lake(warehouse(tmp_path / "w.duckdb"), lake)
    assert again.written == [] and again.unchanged > 0
    file_2005 = next((lake / "contracts" / "year=2005").glob("part-*.parquet"))
    assert load(tmp_path / "w.duckdb", second).ok  # touches 2006 only (C2 and P3), and the audit
    third = export_lake(warehouse(tmp_path / "w.duckdb"), lake)
    assert "contracts/year=2006" in third.written and "payments/year=2006" in third.written
    assert "contracts/year=2005" not in third.written and "payments/year=2005" not in third.written
    assert next((lake / "contracts" / "year=2005").glob("part-*.parquet")) == file_2005
    assert [p.name for p in (lake / "contracts" / "year=2006").iterdir()] == \
        [p.name for p in (lake / "contracts" / "year=2006").glob("part-*.parquet")]  # no hidden leftovers
    ended = duckdb.sql(f"SELECT contract_id, version, status FROM read_parquet('{lake}/contracts/*/*.parquet', "
                       "hive_partitioning = true) WHERE contract_id = 'C2'").fetchall()
    assert ended == [("C2", 2, "ENDED")]


def test_cli_export(tmp_path):
    first, _ = drops(tmp_path)
    assert load(tmp_path / "w.duckdb", first).ok
    run = subprocess.run([sys.executable, "-m", "pilotage.cli", "-w", str(tmp_path / "w.duckdb"), "export",
                          str(tmp_path / "lake")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "partition(s) written" in run.stdout
    assert (tmp_path / "lake" / "_pilotage_lake.json").exists()
