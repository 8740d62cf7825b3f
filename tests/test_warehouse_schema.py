"""The warehouse file: schema versions and migrations, reference data, locations."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dropkit import contract, load, query, write_drop
from pilotage.cli import main
from pilotage.warehouse import Warehouse, WarehouseError
from pilotage.warehouse import schema
from pilotage.warehouse.schema import Migration


def test_a_new_warehouse_is_at_the_current_schema_with_its_reference_data(tmp_path):
    write_drop(tmp_path / "drops", "2006-03-13", {"contracts.csv": [contract("C1")]})
    load(tmp_path, tmp_path / "drops")
    assert query(tmp_path, "SELECT max(version) FROM schema_migrations") == [(schema.SCHEMA_VERSION,)]
    assert query(tmp_path, "SELECT count(*), count(DISTINCT region_2005_code), count(DISTINCT region_2016_code) "
                           "FROM dim_department") == [(101, 27, 18)]
    assert query(tmp_path, "SELECT week_label, iso_year, month_label, quarter_label FROM dim_calendar "
                           "WHERE day = DATE '2005-01-01'") == [("2004-W53", 2004, "2005-01", "2005-Q1")]


def test_a_later_release_migrates_an_existing_file_in_place(tmp_path, monkeypatch):
    write_drop(tmp_path / "drops", "2006-03-13", {"contracts.csv": [contract("C1")]})
    load(tmp_path, tmp_path / "drops")
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    future = Migration(schema.SCHEMA_VERSION + 1, "a column added by a later release",
                       "ALTER TABLE contracts ADD COLUMN note VARCHAR")
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + (future,))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", future.version)
    import pilotage.warehouse.store as store

    monkeypatch.setattr(store, "SCHEMA_VERSION", future.version)
    with pytest.raises(WarehouseError, match="run `pilotage migrate`"):
        with warehouse.connect():
            pass
    result = CliRunner().invoke(main, ["-w", str(warehouse.path), "migrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with warehouse.connect() as con:  # the data is still there, with the new column
        assert con.sql("SELECT contract_id, note FROM contracts").fetchall() == [("C1", None)]
        assert con.sql("SELECT max(version) FROM schema_migrations").fetchall() == [(future.version,)]


def test_a_file_from_a_newer_release_is_refused_clearly(tmp_path, monkeypatch):
    write_drop(tmp_path / "drops", "2006-03-13", {"contracts.csv": [contract("C1")]})
    load(tmp_path, tmp_path / "drops")
    import pilotage.warehouse.store as store

    monkeypatch.setattr(store, "SCHEMA_VERSION", 0)
    with pytest.raises(WarehouseError, match="newer than this pilotage"):
        with Warehouse(tmp_path / "wh.duckdb").connect():
            pass


def test_the_warehouse_path_comes_from_the_option_then_the_environment_then_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PILOTAGE_WAREHOUSE", raising=False)
    assert Warehouse().path == tmp_path / "pilotage.duckdb"
    monkeypatch.setenv("PILOTAGE_WAREHOUSE", str(tmp_path / "env.duckdb"))
    assert Warehouse().path == tmp_path / "env.duckdb"
    assert Warehouse(tmp_path / "given.duckdb").path == tmp_path / "given.duckdb"


def _version_1_warehouse(path, monkeypatch):
    """A warehouse as the first release wrote it: C1 known in versions 1 and 2 (2 current), in the
    history table of that release, which held every version."""
    import duckdb

    import pilotage.warehouse.store as store

    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        patch.setattr(schema, "SCHEMA_VERSION", 1)
        patch.setattr(store, "SCHEMA_VERSION", 1)
        with Warehouse(path).write():
            pass
    con = duckdb.connect(str(path))
    row = ("'C1', {v}, 'CAE', '14', '12345678901234', 'COMMUNE', NULL, NULL, 'F', 1970, 'RMI', "
           "DATE '2006-03-01', DATE '2006-03-01', DATE '2007-02-28', NULL, NULL, 20, 0.7, 500, 'ACTIVE', "
           "DATE '2007-02-28', DATE '2006-03-{d}'")
    con.execute(f"INSERT INTO contract_versions VALUES ({row.format(v=1, d=13)}), ({row.format(v=2, d=14)})")
    con.execute(f"INSERT INTO contracts VALUES ({row.format(v=2, d=14)})")
    con.close()


def test_a_version_1_file_gains_the_alert_tables_and_keeps_its_history(tmp_path, monkeypatch):
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    _version_1_warehouse(warehouse.path, monkeypatch)
    with warehouse.write(in_place=True):
        pass
    with warehouse.connect() as con:
        assert con.sql("SELECT max(version) FROM schema_migrations").fetchall() == [(schema.SCHEMA_VERSION,)]
        assert con.sql("SELECT count(*) FROM alert_states").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM alert_events").fetchall() == [(0,)]
        assert con.sql("SELECT contract_id, version FROM contracts").fetchall() == [("C1", 2)]
        # migration 3: the history is the current rows plus the superseded ones, each stored once
        assert con.sql("SELECT version, drop_date::VARCHAR FROM contract_versions ORDER BY 1").fetchall() == [
            (1, "2006-03-13"), (2, "2006-03-14")]
        assert con.sql("SELECT version FROM contract_superseded").fetchall() == [(1,)]
    # and the migrated file goes on loading: version 3 supersedes version 2
    write_drop(tmp_path / "drops", "2006-03-15", {"contracts.csv": [contract("C1", version=3)]})
    load(tmp_path, tmp_path / "drops")
    assert query(tmp_path, "SELECT version FROM contracts") == [(3,)]
    assert query(tmp_path, "SELECT version FROM contract_superseded ORDER BY 1") == [(1,), (2,)]
    assert query(tmp_path, "SELECT count(*) FROM contract_versions") == [(3,)]
