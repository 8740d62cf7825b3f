"""The CSV dialect of SPEC.md: byte-order mark, line ends, quoting, column order, extra columns,
blank lines, empty fields — and the shared sample drop."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropkit import (HEADERS, contract, envelope, load, load_one, payment, prescription, query, rejects, warehouse,
                     write_drop)
from pilotage.etl.loader import DropOutcome, LoadResult, load_drops
from pilotage.warehouse import Warehouse

DAY1, DAY2 = "2006-03-14", "2006-03-15"
BOM = "\ufeff"
# the interface's sample drop, copied byte for byte from shared/extracts/sample
SAMPLE = Path(__file__).resolve().parent / "fixtures" / "sample" / "2006-03-14"
STATE_TABLES = ("contracts", "contract_versions", "payments", "held_payments", "prescriptions",
                "prescription_versions", "envelopes", "envelope_versions")


# --------------------------------------------------------------------------- helpers

def cli_main():
    """The `pilotage` command, imported when a test runs it (the loader tests need not import the rest)."""
    from pilotage.cli import main

    return main










def state(wh_path: Path) -> dict[str, list[tuple]]:
    """Every state table, plus the quarantine and the per-file counts (without paths, hashes, times)."""
    with Warehouse(wh_path).connect() as con:
        out = {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in STATE_TABLES}
        out["rejects"] = con.sql("SELECT * FROM rejects ORDER BY ALL").fetchall()
        out["load_files"] = con.sql(
            "SELECT * EXCLUDE (sha256, started, finished) FROM load_files ORDER BY ALL").fetchall()
    return out


def counts(outcome: DropOutcome) -> dict[str, tuple[int, int, int, int, int, int]]:
    return {f.file: (f.read, f.loaded, f.unchanged, f.stale, f.rejected, f.held) for f in outcome.files}


def text(name: str, lines: list[str], newline: str = "\n", bom: str = "") -> str:
    return bom + newline.join([HEADERS[name], *lines]) + newline


# a small drop of every kind with one reject and one held payment
def mixed_files() -> dict[str, list[str]]:
    return {
        "contracts.csv": [contract("C1"), contract("C2", department="20"), contract("C3", prescriber="")],
        "payments.csv": [payment("P1"), payment("P2", contract_id="C9"), payment("P3", amount="0")],
        "prescriptions.csv": [prescription("PR1", status="CONVERTED", contract_id="C1")],
        "envelopes.csv": [envelope()],
    }


MIXED_REJECTS = [
    ("contracts.csv", 3, "department", "code", contract("C2", department="20")),
    ("payments.csv", 4, "amount_eur", "amount_not_zero", payment("P3", amount="0")),
]
MIXED_COUNTS = {
    "contracts.csv": (3, 2, 0, 0, 1, 0),
    "payments.csv": (3, 1, 0, 0, 1, 1),
    "prescriptions.csv": (1, 1, 0, 0, 0, 0),
    "envelopes.csv": (1, 1, 0, 0, 0, 0),
}


# --------------------------------------------------------------------------- byte-order mark, line ends

def test_a_byte_order_mark_is_accepted(tmp_path):
    files = {name: text(name, lines, bom=BOM) for name, lines in mixed_files().items()}
    folder = write_drop(tmp_path / "drops", DAY1, files)
    (folder / "control.csv").write_bytes(BOM.encode() + (folder / "control.csv").read_bytes())
    assert (folder / "contracts.csv").read_bytes().startswith(b"\xef\xbb\xbfcontract_id;")

    outcome = load_one(tmp_path / "wh.duckdb", folder)

    assert counts(outcome) == MIXED_COUNTS
    assert rejects(tmp_path / "wh.duckdb") == MIXED_REJECTS
    plain = load_one(tmp_path / "plain.duckdb", write_drop(tmp_path / "plain", DAY1, mixed_files()))
    assert counts(plain) == MIXED_COUNTS
    assert state(tmp_path / "wh.duckdb") == state(tmp_path / "plain.duckdb")


def test_a_reject_on_the_first_data_line_after_a_bom(tmp_path):
    bad = contract("C2", department="20")
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": text("contracts.csv", [bad], bom=BOM)})
    outcome = load_one(tmp_path / "wh.duckdb", folder)
    assert rejects(tmp_path / "wh.duckdb") == [("contracts.csv", 2, "department", "code", bad)]
    assert counts(outcome)["contracts.csv"] == (1, 0, 0, 0, 1, 0)


def test_crlf_line_ends(tmp_path):
    lines = [contract("C1"), contract("C2", department="20"), "C3;1", contract("C4"), contract("C5") + ";x"]
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": lines}, newline="\r\n")
    assert (folder / "contracts.csv").read_bytes().count(b"\r\n") == 6

    outcome = load_one(tmp_path / "wh.duckdb", folder)

    assert rejects(tmp_path / "wh.duckdb") == [
        ("contracts.csv", 3, "department", "code", lines[1]),
        ("contracts.csv", 4, None, "field_count", "C3;1"),
        ("contracts.csv", 6, None, "field_count", lines[4]),
    ]
    assert query(tmp_path / "wh.duckdb", "SELECT contract_id, status FROM contracts ORDER BY 1") == [
        ("C1", "ACTIVE"), ("C4", "ACTIVE")]
    assert counts(outcome)["contracts.csv"] == (5, 2, 0, 0, 3, 0)


def test_crlf_and_lf_give_identical_tables(tmp_path):
    lf = load_one(tmp_path / "lf.duckdb", write_drop(tmp_path / "lf", DAY1, mixed_files()))
    crlf = load_one(tmp_path / "crlf.duckdb", write_drop(tmp_path / "crlf", DAY1, mixed_files(), newline="\r\n"))
    assert counts(lf) == counts(crlf) == MIXED_COUNTS
    assert rejects(tmp_path / "crlf.duckdb") == MIXED_REJECTS
    assert state(tmp_path / "lf.duckdb") == state(tmp_path / "crlf.duckdb")
    assert query(tmp_path / "crlf.duckdb", "SELECT payment_id, file, line FROM held_payments") == [
        ("P2", "payments.csv", 3)]


def test_a_crlf_resend_of_an_lf_drop_is_unchanged(tmp_path):
    wh = tmp_path / "wh.duckdb"
    load_one(wh, write_drop(tmp_path / "lf", DAY1, mixed_files()))
    again = load_one(wh, write_drop(tmp_path / "crlf", DAY2, mixed_files(), newline="\r\n"))
    assert counts(again) == {
        "contracts.csv": (3, 0, 2, 0, 1, 0),
        "payments.csv": (3, 0, 2, 0, 1, 0),
        "prescriptions.csv": (1, 0, 1, 0, 0, 0),
        "envelopes.csv": (1, 0, 1, 0, 0, 0),
    }
    assert query(wh, "SELECT DISTINCT drop_date FROM contracts") == [(date(2006, 3, 14),)]


def test_a_file_without_a_final_line_end(tmp_path):
    data = text("contracts.csv", [contract("C1"), contract("C2", department="20")]).removesuffix("\n")
    outcome = load_one(tmp_path / "wh.duckdb", write_drop(tmp_path / "drops", DAY1, {"contracts.csv": data}))
    assert counts(outcome)["contracts.csv"] == (2, 1, 0, 0, 1, 0)
    assert rejects(tmp_path / "wh.duckdb") == [
        ("contracts.csv", 3, "department", "code", contract("C2", department="20"))]


# --------------------------------------------------------------------------- quoting, empty fields

def test_quoted_fields_hold_separators_and_doubled_quotes(tmp_path):
    quoted = contract("C1", prescriber='"ALE ""Cherbourg""; Nord"')
    values = contract("C2").split(";")
    values[6] = "a;b"  # prescriber_id
    all_quoted = ";".join(f'"{v}"' for v in values)
    bad = contract("C3", department="20", prescriber='"x;""y"""')
    short = '"C4;1";"CAE"'
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [quoted, all_quoted, bad, short]})

    outcome = load_one(tmp_path / "wh.duckdb", folder)

    sql = "SELECT contract_id, prescriber_id, weekly_hours FROM contracts ORDER BY 1"
    assert query(tmp_path / "wh.duckdb", sql) == [
        ("C1", 'ALE "Cherbourg"; Nord', Decimal("26.00")), ("C2", "a;b", Decimal("26.00"))]
    assert rejects(tmp_path / "wh.duckdb") == [
        ("contracts.csv", 4, "department", "code", bad),
        ("contracts.csv", 5, None, "field_count", short),
    ]
    assert counts(outcome)["contracts.csv"] == (4, 2, 0, 0, 2, 0)


def test_a_quoted_empty_field_is_null(tmp_path):
    lines = [contract("C1", prescriber='""', prescription='""'), contract("C2", measure='""')]
    outcome = load_one(tmp_path / "wh.duckdb", write_drop(tmp_path / "drops", DAY1, {"contracts.csv": lines}))
    assert query(tmp_path / "wh.duckdb", "SELECT contract_id, prescriber_id, prescription_id FROM contracts") == [
        ("C1", None, None)]
    assert rejects(tmp_path / "wh.duckdb") == [("contracts.csv", 3, "measure", "not_empty", lines[1])]
    assert counts(outcome)["contracts.csv"] == (2, 1, 0, 0, 1, 0)


def test_quoted_and_unquoted_values_are_the_same_content(tmp_path):
    wh = tmp_path / "wh.duckdb"
    load_one(wh, write_drop(tmp_path / "a", DAY1, {"contracts.csv": [contract(prescriber="")]}))
    again = load_one(wh, write_drop(tmp_path / "b", DAY2, {"contracts.csv": [
        ";".join(f'"{v}"' for v in contract(prescriber="").split(";"))]}))
    assert counts(again)["contracts.csv"] == (1, 0, 1, 0, 0, 0)
    assert rejects(wh) == []


@pytest.mark.parametrize("rows_in_control", [1, 2])
def test_a_field_spanning_two_lines_refuses_the_drop(tmp_path, rows_in_control):
    data = text("contracts.csv", [contract(prescriber='"ALE\nCAEN"')])
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": data})
    control = (folder / "control.csv").read_text()
    (folder / "control.csv").write_text(control.replace("contracts.csv;2;", f"contracts.csv;{rows_in_control};"))

    result = load(tmp_path / "wh.duckdb", folder)

    assert [d.outcome for d in result.drops] == ["refused"]
    assert result.drops[0].message.startswith("contracts.csv: ")
    assert query(tmp_path / "wh.duckdb", "SELECT count(*) FROM contracts") == [(0,)]


# --------------------------------------------------------------------------- columns

def reorder(name: str, lines: list[str], order: list[str]) -> str:
    header = HEADERS[name].split(";")
    rows = [dict(zip(header, line.split(";"))) for line in lines]
    return "\n".join([";".join(order), *(";".join(r[c] for c in order) for r in rows)]) + "\n"


def test_columns_in_another_order_give_the_same_result(tmp_path):
    files = mixed_files()
    reordered = {name: reorder(name, lines, list(reversed(HEADERS[name].split(";")))) for name, lines in files.items()}
    assert reordered["payments.csv"].startswith("kind;amount_eur;paid_date;period_month;contract_id;payment_id\n")

    standard = load_one(tmp_path / "a.duckdb", write_drop(tmp_path / "a", DAY1, files))
    other = load_one(tmp_path / "b.duckdb", write_drop(tmp_path / "b", DAY1, reordered))

    assert counts(standard) == counts(other) == MIXED_COUNTS
    a, b = state(tmp_path / "a.duckdb"), state(tmp_path / "b.duckdb")
    assert {t: v for t, v in a.items() if t != "rejects"} == {t: v for t, v in b.items() if t != "rejects"}
    # the same rows rejected for the same reasons, each quoted as written in its own file
    assert [r[:4] for r in rejects(tmp_path / "b.duckdb")] == [r[:4] for r in MIXED_REJECTS]
    assert rejects(tmp_path / "b.duckdb")[0][4] == ";".join(reversed(contract("C2", department="20").split(";")))


def test_column_order_may_change_between_drops(tmp_path):
    wh = tmp_path / "wh.duckdb"
    load_one(wh, write_drop(tmp_path / "a", DAY1, {"contracts.csv": [contract("C1")]}))
    order = sorted(HEADERS["contracts.csv"].split(";"))
    again = load_one(wh, write_drop(tmp_path / "b", DAY2, {"contracts.csv": reorder(
        "contracts.csv", [contract("C1"), contract("C2", version=2)], order)}))
    assert counts(again)["contracts.csv"] == (2, 1, 1, 0, 0, 0)
    assert query(wh, "SELECT contract_id, version, drop_date FROM contracts ORDER BY 1") == [
        ("C1", 1, date(2006, 3, 14)), ("C2", 2, date(2006, 3, 15))]


def test_an_unknown_extra_column_is_ignored_with_a_warning(tmp_path):
    header = HEADERS["contracts.csv"].split(";")
    header.insert(5, "commentaire")
    rows = []
    for n, line in enumerate([contract("C1"), contract("C2", department="20")]):
        values = line.split(";")
        values.insert(5, f"note {n}")
        rows.append(";".join(values))
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": "\n".join([";".join(header), *rows]) + "\n"})

    result = CliRunner().invoke(cli_main(), ["-w", str(tmp_path / "wh.duckdb"), "load", str(folder)])

    assert result.exit_code == 0, result.output
    assert "contracts.csv: unknown column 'commentaire' ignored" in result.stderr
    assert query(tmp_path / "wh.duckdb", "SELECT contract_id, department, employer_type FROM contracts") == [
        ("C1", "14", "COMMUNE")]
    assert rejects(tmp_path / "wh.duckdb") == [("contracts.csv", 3, "department", "code", rows[1])]
    assert query(tmp_path / "wh.duckdb", "SELECT outcome, message FROM load_drops") == [
        ("loaded", "contracts.csv: unknown column 'commentaire' ignored")]


def test_the_drop_outcome_carries_the_unknown_column_warning(tmp_path):
    data = HEADERS["payments.csv"] + ";extra\n" + payment(contract_id="C9") + ";1\n"
    outcome = load_one(tmp_path / "wh.duckdb", write_drop(tmp_path / "drops", DAY1, {"payments.csv": data}))
    assert outcome.warnings == ("payments.csv: unknown column 'extra' ignored",)
    assert counts(outcome)["payments.csv"] == (1, 0, 0, 0, 0, 1)


# --------------------------------------------------------------------------- blank lines

def test_blank_lines_keep_physical_line_numbers(tmp_path):
    bad = contract("C2", department="20")
    lines = [contract("C1"), "", "", bad, "", "C3;1", contract("C4")]
    data = text("contracts.csv", lines)
    payments = text("payments.csv", [payment("P1"), "", payment("P2", contract_id="C9"), "", payment("P3", amount="0")])
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": data, "payments.csv": payments})

    outcome = load_one(tmp_path / "wh.duckdb", folder)

    assert rejects(tmp_path / "wh.duckdb") == [
        ("contracts.csv", 5, "department", "code", bad),
        ("contracts.csv", 7, None, "field_count", "C3;1"),
        ("payments.csv", 6, "amount_eur", "amount_not_zero", payment("P3", amount="0")),
    ]
    assert query(tmp_path / "wh.duckdb", "SELECT payment_id, line FROM held_payments") == [("P2", 4)]
    assert query(tmp_path / "wh.duckdb", "SELECT contract_id FROM contracts ORDER BY 1") == [("C1",), ("C4",)]
    assert counts(outcome)["contracts.csv"] == (4, 2, 0, 0, 2, 0)
    assert counts(outcome)["payments.csv"] == (3, 1, 0, 0, 1, 1)


def test_blank_lines_with_crlf_and_at_the_end(tmp_path):
    bad = contract("C2", department="20")
    data = text("contracts.csv", [contract("C1"), "", bad, "", ""], newline="\r\n")
    outcome = load_one(tmp_path / "wh.duckdb", write_drop(tmp_path / "drops", DAY1, {"contracts.csv": data}))
    assert rejects(tmp_path / "wh.duckdb") == [("contracts.csv", 4, "department", "code", bad)]
    assert counts(outcome)["contracts.csv"] == (2, 1, 0, 0, 1, 0)


def test_bom_crlf_blank_lines_and_a_short_line_together(tmp_path):
    bad = contract("C2", department="20")
    data = text("contracts.csv", [contract("C1"), "", "C3;1", bad, "", contract("C4")], newline="\r\n", bom=BOM)
    outcome = load_one(tmp_path / "wh.duckdb", write_drop(tmp_path / "drops", DAY1, {"contracts.csv": data}))
    assert rejects(tmp_path / "wh.duckdb") == [
        ("contracts.csv", 4, None, "field_count", "C3;1"),
        ("contracts.csv", 5, "department", "code", bad),
    ]
    assert counts(outcome)["contracts.csv"] == (4, 2, 0, 0, 2, 0)


def test_line_numbers_when_several_drops_load_together(tmp_path):
    """Files of one kind are read together: each keeps its own line numbers."""
    bad2, bad3 = contract("C2", department="20"), contract("C3", department="975")
    d1 = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": text("contracts.csv", [contract("C1"), "", bad2])})
    d2 = write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract("C4"), contract("C5"), "C6;1", bad3]})
    result = load(tmp_path / "wh.duckdb", d1, d2)
    assert [d.outcome for d in result.drops] == ["loaded", "loaded"]
    assert query(tmp_path / "wh.duckdb", 'SELECT drop_date, line, "column", rule, raw FROM rejects ORDER BY ALL') == [
        (date(2006, 3, 14), 4, "department", "code", bad2),
        (date(2006, 3, 15), 4, None, "field_count", "C6;1"),
        (date(2006, 3, 15), 5, "department", "code", bad3),
    ]


def test_a_bare_carriage_return_in_a_field_does_not_abort_the_load(tmp_path):
    odd = text("contracts.csv", [contract("C1"), contract("C2", prescriber="ALE\rCAEN"), contract("C3")])
    bad = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": odd})
    good = write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract("C4")]})
    result = load(tmp_path / "wh.duckdb", bad, good)
    outcomes = {d.path: d.outcome for d in result.drops}
    assert outcomes[good] == "loaded"
    assert outcomes[bad] in ("loaded", "refused")
    ids = [k for (k,) in query(tmp_path / "wh.duckdb", "SELECT contract_id FROM contracts ORDER BY 1")]
    if outcomes[bad] == "loaded":  # then nothing of it may be lost: C2 loaded or quarantined
        quarantined = query(tmp_path / "wh.duckdb", "SELECT DISTINCT line FROM rejects")
        assert (ids, quarantined) in ((["C1", "C2", "C3", "C4"], []), (["C1", "C3", "C4"], [(3,)]))
    else:
        assert ids == ["C4"]


def test_a_file_in_control_outside_the_interface_is_ignored_with_a_warning(tmp_path):
    folder = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract()]})
    (folder / "notes.txt").write_text("hello\n")
    with (folder / "control.csv").open("a") as control:
        control.write("notes.txt;1;" + "0" * 64 + "\n")
    outcome = load_one(tmp_path / "wh.duckdb", folder)
    assert outcome.warnings == ("notes.txt: listed in control.csv but not a file of the interface; ignored",)
    assert counts(outcome)["contracts.csv"] == (1, 1, 0, 0, 0, 0)


# --------------------------------------------------------------------------- the shared sample

@pytest.fixture
def sample(tmp_path) -> Path:
    return Path(shutil.copytree(SAMPLE, tmp_path / "drops" / "2006-03-14"))


def test_the_shared_sample_loads_as_spec_describes(tmp_path, sample):
    wh = tmp_path / "wh.duckdb"
    outcome = load_one(wh, sample)

    assert outcome.warnings == ()
    assert counts(outcome) == {
        "contracts.csv": (3, 3, 0, 0, 0, 0),
        "payments.csv": (2, 2, 0, 0, 0, 0),
        "prescriptions.csv": (1, 1, 0, 0, 0, 0),
        "envelopes.csv": (1, 1, 0, 0, 0, 0),
    }
    assert rejects(wh) == []
    assert query(wh, "SELECT contract_id, version, measure, status, prescriber_id, end_reason FROM contracts "
                     "ORDER BY 1") == [
        ("CAE-2006-000101", 1, "CAE", "ACTIVE", "ALE-14-CAEN", None),
        ("CAV-2006-000007", 1, "CAV", "CANCELLED", "ALE-61-ALENCON", None),
        ("CIE-2005-004412", 2, "CIE", "ENDED", 'ALE "Cherbourg"; Nord', "RUPTURE_SALARIE"),
    ]
    assert query(wh, "SELECT payment_id, amount_eur, kind, department, measure FROM payments ORDER BY 1") == [
        ("PAY-2006-0090001", Decimal("116.10"), "REGULARISATION", "50", "CIE"),
        ("PAY-2006-0090002", Decimal("-580.52"), "RECOVERY", "50", "CIE"),
    ]
    assert query(wh, "SELECT prescription_id, version, status, contract_id FROM prescriptions") == [
        ("PR-2006-000871", 2, "CONVERTED", "CAE-2006-000101")]
    assert query(wh, "SELECT year, region_code, measure, version, physical_envelope, financial_envelope_eur "
                     "FROM envelopes") == [(2006, "25", "CAE", 2, 4120, Decimal("19850000.00"))]
    assert query(wh, "SELECT count(*) FROM held_payments") == [(0,)]


def test_the_shared_sample_in_crlf_gives_identical_tables(tmp_path, sample):
    load_one(tmp_path / "lf.duckdb", sample)
    crlf = tmp_path / "crlf"
    files = {p.name: p.read_bytes().replace(b"\n", b"\r\n") for p in sample.glob("*.csv") if p.name != "control.csv"}
    folder = write_drop(crlf, DAY1, files)
    assert (folder / "contracts.csv").read_bytes().count(b"\r\n") == 4
    load_one(tmp_path / "crlf.duckdb", folder)
    assert state(tmp_path / "lf.duckdb") == state(tmp_path / "crlf.duckdb")
