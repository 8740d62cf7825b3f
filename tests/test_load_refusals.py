"""Drops refused as a whole: nothing of them reaches the warehouse, only the audit says why.

A first good drop is loaded once into a template warehouse; each test copies it, loads a bad drop
(through the CLI: exit code 1 and the reason on stderr) and compares every data table with the
template's: only `load_drops` gains a row, outcome `refused`, naming the file and the reason.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropkit import CONTRACT_HEADER, contract, envelope, payment, prescription, write_drop
from pilotage.etl.loader import load_drops
from pilotage.warehouse import Warehouse

DAY1, DAY2, DAY3, DAY4, DAY5 = "2006-03-14", "2006-03-15", "2006-03-16", "2006-03-17", "2006-03-20"
DATA_TABLES = ("contracts", "contract_versions", "payments", "held_payments", "prescriptions",
               "prescription_versions", "envelopes", "envelope_versions", "rejects", "load_files")


# --------------------------------------------------------------------------- helpers

def cli_main():
    """The `pilotage` command, imported when a test runs it (the loader tests need not import the rest)."""
    from pilotage.cli import main

    return main


def snapshot(wh: Warehouse) -> dict[str, list[tuple]]:
    with wh.connect() as con:
        return {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in DATA_TABLES}


def audit(wh: Warehouse) -> list[tuple]:
    with wh.connect() as con:
        return con.sql(
            "SELECT load_id, drop_date, drop_path, outcome, message FROM load_drops ORDER BY load_id").fetchall()


def first_drop_files() -> dict[str, list[str]]:
    return {
        "contracts.csv": [contract("C1"), contract("C2", department="20")],
        "payments.csv": [payment("P1"), payment("P2", contract_id="C9")],
        "prescriptions.csv": [prescription("PR1")],
        "envelopes.csv": [envelope()],
    }


def second_drop_files() -> dict[str, list[str]]:
    """New content of every kind, a reject and a held payment: had it loaded, every table would change."""
    return {
        "contracts.csv": [contract("C1", version=2, department="50"), contract("C9"), contract("C3", hours="0")],
        "payments.csv": [payment("P3"), payment("P4", contract_id="C8")],
        "prescriptions.csv": [prescription("PR1", version=2, status="CONVERTED", contract_id="C1")],
        "envelopes.csv": [envelope(version=2, physical="4120")],
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A warehouse holding the first good drop."""
    root = tmp_path_factory.mktemp("template")
    result = load_drops(Warehouse(root / "wh.duckdb"), [write_drop(root / "drops", DAY1, first_drop_files())])
    assert [d.outcome for d in result.drops] == ["loaded"]
    return root / "wh.duckdb"


@pytest.fixture
def wh(template, tmp_path) -> Warehouse:
    shutil.copyfile(template, tmp_path / "wh.duckdb")
    return Warehouse(tmp_path / "wh.duckdb")


def cli_load(wh: Warehouse, *paths: Path):
    return CliRunner().invoke(cli_main(), ["-w", str(wh.path), "load", *map(str, paths)])


def rewrite_control(folder: Path, drop: tuple[str, ...] = (), rows: dict[str, int] | None = None) -> None:
    """Edit control.csv: leave out the files `drop`, state other row counts."""
    lines = (folder / "control.csv").read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        name, count, sha = line.split(";")
        if name in drop:
            continue
        out.append(f"{name};{(rows or {}).get(name, count)};{sha}")
    (folder / "control.csv").write_text("\n".join(out) + "\n")


# --------------------------------------------------------------------------- the bad drops

def no_control(root: Path, day: str = DAY2) -> Path:
    return write_drop(root, day, second_drop_files(), control=False)


def control_names_an_absent_file(root: Path, day: str = DAY2) -> Path:
    folder = write_drop(root, day, second_drop_files())
    (folder / "envelopes.csv").unlink()
    return folder


def required_file_missing(root: Path, day: str = DAY2) -> Path:
    folder = write_drop(root, day, second_drop_files())
    (folder / "prescriptions.csv").unlink()
    rewrite_control(folder, drop=("prescriptions.csv",))
    return folder


def sha_mismatch(root: Path, day: str = DAY2) -> Path:
    folder = write_drop(root, day, second_drop_files())
    path = folder / "contracts.csv"
    path.write_bytes(path.read_bytes().replace(b";26;0.90;", b";25;0.90;", 1))  # same rows, other bytes
    return folder


def row_count_mismatch(root: Path, day: str = DAY2) -> Path:
    folder = write_drop(root, day, second_drop_files())
    rewrite_control(folder, rows={"payments.csv": 3})
    return folder


def file_not_in_control(root: Path, day: str = DAY2) -> Path:
    folder = write_drop(root, day, second_drop_files())
    rewrite_control(folder, drop=("envelopes.csv",))
    return folder


def latin1_contracts(root: Path, day: str = DAY2) -> Path:
    rows = second_drop_files()["contracts.csv"] + [contract("C4", prescriber="ALE-14-CAEN-Hérouville")]
    data = ("\n".join([CONTRACT_HEADER, *rows]) + "\n").encode("latin-1")
    assert b"\xe9" in data
    return write_drop(root, day, {**second_drop_files(), "contracts.csv": data})


def latin1_header(root: Path, day: str = DAY2) -> Path:
    rows = [line + ";x" for line in second_drop_files()["contracts.csv"]]
    data = ("\n".join([CONTRACT_HEADER + ";remarqué", *rows]) + "\n").encode("latin-1")
    return write_drop(root, day, {**second_drop_files(), "contracts.csv": data})


def missing_column(root: Path, day: str = DAY2) -> Path:
    header = CONTRACT_HEADER.removesuffix(";status")
    rows = [line.rsplit(";", 1)[0] for line in second_drop_files()["contracts.csv"]]
    return write_drop(root, day, {**second_drop_files(), "contracts.csv": "\n".join([header, *rows]) + "\n"})


def column_name_in_other_case(root: Path, day: str = DAY2) -> Path:
    header = CONTRACT_HEADER.replace(";department;", ";Department;")
    rows = second_drop_files()["contracts.csv"]
    return write_drop(root, day, {**second_drop_files(), "contracts.csv": "\n".join([header, *rows]) + "\n"})


def unterminated_quote(root: Path, day: str = DAY2) -> Path:
    rows = second_drop_files()["contracts.csv"]
    rows.insert(1, contract("C5", prescriber='"ALE-14-CAEN'))
    return write_drop(root, day, {**second_drop_files(), "contracts.csv": rows})


def duplicated_column(root: Path, day: str = DAY2) -> Path:
    rows = [line + ";CAE" for line in second_drop_files()["contracts.csv"]]
    return write_drop(root, day, {**second_drop_files(),
                                   "contracts.csv": "\n".join([CONTRACT_HEADER + ";measure", *rows]) + "\n"})


def name_not_a_date(root: Path, day: str = DAY2) -> Path:
    return write_drop(root, "drop-2006-03-15", second_drop_files())


def impossible_date_name(root: Path, day: str = DAY2) -> Path:
    return write_drop(root, "2006-02-30", second_drop_files())


# (case id, make the drop, the drop date recorded, words the message must hold)
REFUSALS = [
    ("control.csv missing", no_control, date(2006, 3, 15), ["control.csv is missing"]),
    ("control names an absent file", control_names_an_absent_file, date(2006, 3, 15),
     ["envelopes.csv", "absent"]),
    ("required file missing", required_file_missing, date(2006, 3, 15), ["prescriptions.csv", "required", "missing"]),
    ("sha256 mismatch", sha_mismatch, date(2006, 3, 15), ["contracts.csv", "sha256"]),
    ("row count mismatch", row_count_mismatch, date(2006, 3, 15), ["payments.csv", "2 data rows", "says 3"]),
    ("data file not in control", file_not_in_control, date(2006, 3, 15), ["envelopes.csv", "not listed"]),
    ("contracts in latin-1", latin1_contracts, date(2006, 3, 15), ["contracts.csv", "UTF-8"]),
    ("latin-1 in the header", latin1_header, date(2006, 3, 15), ["contracts.csv", "line 1", "UTF-8"]),
    ("missing required column", missing_column, date(2006, 3, 15), ["contracts.csv", "missing column", "status"]),
    ("column name in another case", column_name_in_other_case, date(2006, 3, 15),
     ["contracts.csv", "missing column", "department"]),
    ("duplicated column", duplicated_column, date(2006, 3, 15), ["contracts.csv", "duplicated", "measure"]),
    ("unterminated quote", unterminated_quote, date(2006, 3, 15), ["contracts.csv", "line 3", "quote"]),
    ("folder name not a date", name_not_a_date, None, ["not an extract date"]),
    ("folder name an impossible date", impossible_date_name, None, ["not an extract date"]),
]


def refusal_params():
    return [pytest.param(*case[1:4], id=case[0], marks=case[4:]) for case in REFUSALS]


@pytest.mark.parametrize("make, drop_date, words", refusal_params())
def test_a_refused_drop_changes_nothing_but_the_audit(wh, tmp_path, make, drop_date, words):
    before, audit_before = snapshot(wh), audit(wh)
    folder = make(tmp_path / "drops")

    result = cli_load(wh, folder)

    assert result.exit_code == 1, result.output
    assert "REFUSED" in result.stderr
    for word in words:
        assert word in result.stderr
    assert "0 loaded, 0 skipped, 1 refused" in result.stdout
    assert snapshot(wh) == before
    after = audit(wh)
    assert after[:-1] == audit_before
    load_id, day, path, outcome, message = after[-1]
    assert (path, outcome) == (str(folder), "refused")
    assert load_id > audit_before[-1][0]
    if drop_date is not None:
        assert day == drop_date
    for word in words:
        assert word in message


def test_the_refusal_is_reported_in_the_drop_outcome(wh, tmp_path):
    folder = sha_mismatch(tmp_path / "drops")
    result = load_drops(wh, [folder])
    assert not result.ok
    [outcome] = result.drops
    assert (outcome.date, outcome.path, outcome.outcome, outcome.files) == (date(2006, 3, 15), folder, "refused", ())
    assert outcome.message.startswith("contracts.csv: sha256 is ")
    assert outcome.message == audit(wh)[-1][4]
    assert result.refused == [outcome]


def test_status_counts_refused_drops(wh, tmp_path):
    load_drops(wh, [no_control(tmp_path / "drops")])
    result = CliRunner().invoke(cli_main(), ["-w", str(wh.path), "status", "--format", "json"], catch_exceptions=False)
    status = json.loads(result.stdout)
    assert (status["as_of"], status["drops_loaded"], status["drops_refused"]) == ("2006-03-14", 1, 1)
    assert (status["contracts"], status["payments"], status["held_payments"], status["rejected_rows"]) == (1, 1, 1, 1)


def test_a_refused_first_drop_leaves_an_empty_warehouse(tmp_path):
    wh = Warehouse(tmp_path / "wh.duckdb")
    result = load_drops(wh, [sha_mismatch(tmp_path / "drops")])
    assert [d.outcome for d in result.drops] == ["refused"]
    assert snapshot(wh) == {t: [] for t in DATA_TABLES}
    assert [row[1:4] for row in audit(wh)] == [(date(2006, 3, 15), str(tmp_path / "drops" / DAY2), "refused")]


# --------------------------------------------------------------------------- several drops, re-sends

def loaded_keys(wh: Warehouse) -> tuple:
    with wh.connect() as con:
        return tuple(con.sql(q).fetchall() for q in (
            "SELECT contract_id, version, drop_date FROM contracts ORDER BY ALL",
            "SELECT payment_id, drop_date FROM payments ORDER BY ALL",
            "SELECT payment_id, drop_date FROM held_payments ORDER BY ALL",
            "SELECT prescription_id, version, drop_date FROM prescriptions ORDER BY ALL",
            "SELECT region_code, version, drop_date FROM envelopes ORDER BY ALL",
            "SELECT drop_date, file, line, rule FROM rejects ORDER BY ALL",
        ))


def test_in_one_call_the_refused_drops_do_not_stop_the_others(wh, tmp_path):
    root = tmp_path / "drops"
    write_drop(root, DAY2, {"contracts.csv": [contract("C10")], "payments.csv": [payment("P10", "C10")]})
    sha_mismatch(root, DAY3)
    quote = write_drop(root, DAY4, {"contracts.csv": [contract("C11"), contract("C12", prescriber='"x'),
                                                      contract("C13", department="20")],
                                    "payments.csv": [payment("P11", "C77")]})
    write_drop(root, DAY5, {"contracts.csv": [contract("C14"), contract("C15", hours="0")],
                            "payments.csv": [payment("P14", "C14")]})

    result = load_drops(wh, [root])

    drops = sorted(result.drops, key=lambda d: d.date)
    assert [(d.date.isoformat(), d.outcome) for d in drops] == [
        (DAY2, "loaded"), (DAY3, "refused"), (DAY4, "refused"), (DAY5, "loaded")]
    assert drops[1].message.startswith("contracts.csv: sha256 is ")
    assert drops[2].path == quote and drops[2].message.startswith("contracts.csv: line 3")
    assert [f.file for f in drops[3].files] == ["contracts.csv", "payments.csv", "prescriptions.csv"]
    assert [(f.read, f.loaded, f.rejected) for f in drops[3].files] == [(2, 1, 1), (1, 1, 0), (0, 0, 0)]
    d1, d2, d5 = date(2006, 3, 14), date(2006, 3, 15), date(2006, 3, 20)
    assert loaded_keys(wh) == (
        [("C1", 1, d1), ("C10", 1, d2), ("C14", 1, d5)],
        [("P1", d1), ("P10", d2), ("P14", d5)],
        [("P2", d1)],
        [("PR1", 1, d1)],
        [("25", 1, d1)],
        [(d1, "contracts.csv", 3, "code"), (d5, "contracts.csv", 3, "weekly_hours_0_to_48")],
    )
    assert sorted((row[1], row[2], row[3]) for row in audit(wh)[1:]) == [
        (d2, str(root / DAY2), "loaded"),
        (date(2006, 3, 16), str(root / DAY3), "refused"),
        (date(2006, 3, 17), str(root / DAY4), "refused"),
        (d5, str(root / DAY5), "loaded"),
    ]
    with wh.connect() as con:
        assert con.sql("SELECT DISTINCT drop_date FROM load_files ORDER BY 1").fetchall() == [(d1,), (d2,), (d5,)]


def test_in_one_call_a_latin1_drop_does_not_stop_the_others(wh, tmp_path):
    root = tmp_path / "drops"
    write_drop(root, DAY3, {"contracts.csv": [contract("C10")]})
    latin1_contracts(root, DAY2)
    result = load_drops(wh, [root])
    assert sorted((d.date.isoformat(), d.outcome) for d in result.drops) == [(DAY2, "refused"), (DAY3, "loaded")]
    assert loaded_keys(wh)[0] == [("C1", 1, date(2006, 3, 14)), ("C10", 1, date(2006, 3, 16))]


def test_a_refused_drop_corrected_and_resent_loads(wh, tmp_path):
    folder = sha_mismatch(tmp_path / "drops")
    assert [d.outcome for d in load_drops(wh, [folder]).drops] == ["refused"]
    shutil.rmtree(folder)
    write_drop(tmp_path / "drops", DAY2, second_drop_files())

    result = load_drops(wh, [folder])

    assert [d.outcome for d in result.drops] == ["loaded"]
    d1, d2 = date(2006, 3, 14), date(2006, 3, 15)
    assert loaded_keys(wh) == (
        [("C1", 2, d2), ("C9", 1, d2)],
        [("P1", d1), ("P2", d1), ("P3", d2)],  # P2 (contract C9) released
        [("P4", d2)],
        [("PR1", 2, d2)],
        [("25", 2, d2)],
        [(d1, "contracts.csv", 3, "code"), (d2, "contracts.csv", 4, "weekly_hours_0_to_48")],
    )
    assert [(row[1], row[3]) for row in audit(wh)] == [(d1, "loaded"), (d2, "refused"), (d2, "loaded")]


def test_a_refused_drop_sent_again_unchanged_is_refused_again(wh, tmp_path):
    folder = row_count_mismatch(tmp_path / "drops")
    before = snapshot(wh)
    assert [d.outcome for d in load_drops(wh, [folder]).drops] == ["refused"]
    assert [d.outcome for d in load_drops(wh, [folder]).drops] == ["refused"]
    assert snapshot(wh) == before
    assert [row[3] for row in audit(wh)] == ["loaded", "refused", "refused"]


def test_loading_the_same_good_drop_twice_skips_it(wh, tmp_path):
    folder = write_drop(tmp_path / "drops", DAY2, second_drop_files())
    assert [d.outcome for d in load_drops(wh, [folder]).drops] == ["loaded"]
    before, audit_before = snapshot(wh), audit(wh)

    result = load_drops(wh, [folder])

    assert [(d.date, d.outcome, d.files) for d in result.drops] == [(date(2006, 3, 15), "skipped", ())]
    assert result.ok
    assert snapshot(wh) == before
    assert audit(wh) == audit_before
    cli = cli_load(wh, folder)
    assert cli.exit_code == 0
    assert "0 loaded, 1 skipped, 0 refused" in cli.stdout
    assert snapshot(wh) == before and audit(wh) == audit_before


def test_a_copy_of_a_loaded_drop_elsewhere_is_skipped_too(wh, tmp_path):
    folder = write_drop(tmp_path / "a", DAY2, second_drop_files())
    copy = tmp_path / "b" / DAY2
    shutil.copytree(folder, copy)
    result = load_drops(wh, [folder, copy])
    assert {d.path: d.outcome for d in result.drops} == {folder: "loaded", copy: "skipped"}
    assert [row[3] for row in audit(wh)] == ["loaded", "loaded"]
    assert loaded_keys(wh)[0] == [("C1", 2, date(2006, 3, 15)), ("C9", 1, date(2006, 3, 15))]


def test_a_misnamed_drop_in_a_folder_of_drops_is_not_ignored_silently(wh, tmp_path):
    root = tmp_path / "drops"
    write_drop(root, DAY2, {"contracts.csv": [contract("C10")]})
    misnamed = write_drop(root, "2006-3-16", {"contracts.csv": [contract("C11")]})
    result = load_drops(wh, [root])
    assert {d.path: d.outcome for d in result.drops} == {root / DAY2: "loaded", misnamed: "refused"}
