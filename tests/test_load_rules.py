"""Every row rule of SPEC.md, one hand-made drop per rule: what is rejected, where, and what still
loads; then the version rules across drops, held payments and the `rejects` command."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropkit import (HEADERS, contract, envelope, load, load_one, payment, prescription, query, rejects, warehouse,
                     write_drop)
from pilotage.etl.loader import DropOutcome, LoadResult, load_drops
from pilotage.warehouse import Warehouse

DAY1, DAY2, DAY3 = "2006-03-14", "2006-03-15", "2006-03-16"


# --------------------------------------------------------------------------- helpers

def cli_main():
    """The `pilotage` command, imported when a test runs it (the loader tests need not import the rest)."""
    from pilotage.cli import main

    return main












def counts(outcome: DropOutcome) -> dict[str, tuple[int, int, int, int, int, int]]:
    """file -> (read, loaded, unchanged, stale, rejected, held)."""
    return {f.file: (f.read, f.loaded, f.unchanged, f.stale, f.rejected, f.held) for f in outcome.files}


NOTHING = (0, 0, 0, 0, 0, 0)


def expected_counts(**files: tuple[int, int, int, int, int, int]) -> dict[str, tuple]:
    out = {"contracts.csv": NOTHING, "payments.csv": NOTHING, "prescriptions.csv": NOTHING}
    out.update({f"{name}.csv": value for name, value in files.items()})
    return out


# --------------------------------------------------------------------------- one bad row per rule

# Every case is its own drop (its own extract date and keys): a valid row on line 2, the row under
# test on line 3, another valid row on line 4. All the case drops are loaded by one call into one
# warehouse (a load costs ~0.25 s whatever its size; one per case would take a minute), and a few
# cases are loaded alone below to show that loading them together changes nothing.

BUILD = {"contracts": contract, "payments": payment, "prescriptions": prescription, "envelopes": envelope}
CURRENT = {  # current table, the column naming a row of the case
    "contracts": ("contracts", "contract_id"),
    "payments": ("payments", "payment_id"),
    "prescriptions": ("prescriptions", "prescription_id"),
    "envelopes": ("envelopes", "measure"),
}

ID_33 = "C" * 33
ID_32 = "C" * 32
ENDED = {"actual_end": "2006-05-31", "end_reason": "TERME", "status": "ENDED"}


# (case id, file, overrides of the row, blamed column, rule[, mark])
# overrides: arguments of the dropkit builder; `fields`: {column: text} set as is; `append`: text
# added at the end of the line; `keep`: keep only that many fields.
REJECTED = [
    # contracts: empty required fields
    ("contract_id empty", "contracts", {"contract_id": ""}, "contract_id", "not_empty"),
    ("version empty", "contracts", {"version": ""}, "version", "not_empty"),
    ("measure empty", "contracts", {"measure": ""}, "measure", "not_empty"),
    ("department empty", "contracts", {"department": ""}, "department", "not_empty"),
    ("employer_id empty", "contracts", {"employer": ""}, "employer_id", "not_empty"),
    ("employer_type empty", "contracts", {"employer_type": ""}, "employer_type", "not_empty"),
    ("sex empty", "contracts", {"sex": ""}, "beneficiary_sex", "not_empty"),
    ("birth year empty", "contracts", {"birth_year": ""}, "beneficiary_birth_year", "not_empty"),
    ("category empty", "contracts", {"category": ""}, "beneficiary_category", "not_empty"),
    ("signed empty", "contracts", {"fields": {"signed_date": ""}}, "signed_date", "not_empty"),
    ("start empty", "contracts", {"signed": "2006-03-10", "start": ""}, "start_date", "not_empty"),
    ("planned end empty", "contracts", {"planned_end": ""}, "planned_end_date", "not_empty"),
    ("weekly_hours empty", "contracts", {"hours": ""}, "weekly_hours", "not_empty"),
    ("subsidy_rate empty", "contracts", {"rate": ""}, "subsidy_rate", "not_empty"),
    ("monthly aid empty", "contracts", {"aid": ""}, "monthly_aid_eur", "not_empty"),
    ("status empty", "contracts", {"status": ""}, "status", "not_empty"),
    # contracts: formats and codes
    ("contract_id 33 chars", "contracts", {"contract_id": ID_33}, "contract_id", "max_32_chars"),
    ("version 0", "contracts", {"version": "0"}, "version", "version_at_least_1"),
    ("version -1", "contracts", {"version": "-1"}, "version", "version_at_least_1"),
    ("version 1.5", "contracts", {"version": "1.5"}, "version", "integer"),
    ("version v2", "contracts", {"version": "v2"}, "version", "integer"),
    ("measure unknown", "contracts", {"measure": "CUI"}, "measure", "code"),
    ("measure lower case", "contracts", {"measure": "cae"}, "measure", "code"),
    ("department 20", "contracts", {"department": "20"}, "department", "code"),
    ("department 975", "contracts", {"department": "975"}, "department", "code"),
    ("department 2a", "contracts", {"department": "2a"}, "department", "code"),
    ("department 4", "contracts", {"department": "4"}, "department", "code"),
    ("employer_type unknown", "contracts", {"employer_type": "MAIRIE"}, "employer_type", "code"),
    ("sex unknown", "contracts", {"sex": "X"}, "beneficiary_sex", "code"),
    ("category unknown", "contracts", {"category": "RSA"}, "beneficiary_category", "code"),
    ("end_reason unknown", "contracts", {**ENDED, "end_reason": "DEMISSION"}, "end_reason", "code"),
    ("status unknown", "contracts", {"status": "SUSPENDED"}, "status", "code"),
    ("birth year not integer", "contracts", {"birth_year": "1979.0"}, "beneficiary_birth_year", "integer"),
    ("weekly_hours 26,5", "contracts", {"hours": "26,5"}, "weekly_hours", "decimal"),
    ("subsidy_rate comma", "contracts", {"rate": "0,9"}, "subsidy_rate", "decimal"),
    ("monthly aid text", "contracts", {"aid": "816 EUR"}, "monthly_aid_eur", "decimal"),
    ("signed 2006-02-30", "contracts", {"signed": "2006-02-30"}, "signed_date", "date"),
    ("planned end 14/03/2006", "contracts", {"planned_end": "14/03/2006"}, "planned_end_date", "date"),
    ("start 2006-3-1", "contracts", {"signed": "2006-02-27", "start": "2006-3-1"}, "start_date", "date"),
    ("actual end 2006-3-1", "contracts", {**ENDED, "actual_end": "2006-3-1"}, "actual_end_date", "date",
),
    # contracts: cross-column rules
    ("siret 13 digits", "contracts", {"employer": "2114011830001"}, "employer_id", "siret_14_digits"),
    ("siret 15 digits", "contracts", {"employer": "211401183000170"}, "employer_id", "siret_14_digits"),
    ("siret with a letter", "contracts", {"employer": "2114011830001A"}, "employer_id", "siret_14_digits"),
    ("age 15", "contracts", {"birth_year": "1991"}, "beneficiary_birth_year", "age_at_start_16_to_70"),
    ("age 71", "contracts", {"birth_year": "1935"}, "beneficiary_birth_year", "age_at_start_16_to_70"),
    ("signed after start", "contracts", {"signed": "2006-03-14"}, "signed_date", "signed_not_after_start"),
    ("planned end before start", "contracts", {"planned_end": "2006-03-12"}, "planned_end_date",
     "planned_end_not_before_start"),
    ("actual end before start", "contracts", {**ENDED, "actual_end": "2006-03-12"}, "actual_end_date",
     "actual_end_not_before_start"),
    ("end_reason without actual end", "contracts", {"end_reason": "TERME"}, "end_reason", "end_reason_iff_actual_end"),
    ("actual end without end_reason", "contracts", {**ENDED, "end_reason": ""}, "end_reason",
     "end_reason_iff_actual_end"),
    ("weekly_hours 0", "contracts", {"hours": "0"}, "weekly_hours", "weekly_hours_0_to_48"),
    ("weekly_hours 48.5", "contracts", {"hours": "48.5"}, "weekly_hours", "weekly_hours_0_to_48"),
    ("weekly_hours negative", "contracts", {"hours": "-20"}, "weekly_hours", "weekly_hours_0_to_48"),
    ("subsidy_rate 0", "contracts", {"rate": "0"}, "subsidy_rate", "subsidy_rate_0_to_1"),
    ("subsidy_rate 1.01", "contracts", {"rate": "1.01"}, "subsidy_rate", "subsidy_rate_0_to_1"),
    ("monthly aid negative", "contracts", {"aid": "-0.01"}, "monthly_aid_eur", "monthly_aid_not_negative"),
    ("ENDED without actual end", "contracts", {"status": "ENDED"}, "status", "ended_iff_actual_end"),
    ("ACTIVE with actual end", "contracts", {**ENDED, "status": "ACTIVE"}, "status", "ended_iff_actual_end"),
    ("CANCELLED with actual end", "contracts", {**ENDED, "status": "CANCELLED"}, "status", "ended_iff_actual_end"),
    # payments
    ("payment_id empty", "payments", {"payment_id": ""}, "payment_id", "not_empty"),
    ("payment contract_id empty", "payments", {"contract_id": ""}, "contract_id", "not_empty"),
    ("period empty", "payments", {"period": ""}, "period_month", "not_empty"),
    ("paid date empty", "payments", {"paid": ""}, "paid_date", "not_empty"),
    ("amount empty", "payments", {"amount": ""}, "amount_eur", "not_empty"),
    ("kind empty", "payments", {"kind": ""}, "kind", "not_empty"),
    ("payment_id 33 chars", "payments", {"payment_id": "P" * 33}, "payment_id", "max_32_chars"),
    ("amount 0", "payments", {"amount": "0"}, "amount_eur", "amount_not_zero"),
    ("amount 0.00", "payments", {"amount": "0.00"}, "amount_eur", "amount_not_zero"),
    ("negative AID", "payments", {"amount": "-816.10", "kind": "AID"}, "amount_eur", "negative_only_for_recovery"),
    ("negative REGULARISATION", "payments", {"amount": "-12.00", "kind": "REGULARISATION"}, "amount_eur",
     "negative_only_for_recovery"),
    ("amount comma", "payments", {"amount": "816,10"}, "amount_eur", "decimal"),
    ("period 2006-13", "payments", {"period": "2006-13"}, "period_month", "year_month"),
    ("period 2006-3", "payments", {"period": "2006-3"}, "period_month", "year_month"),
    ("period 2006-00", "payments", {"period": "2006-00"}, "period_month", "year_month"),
    ("period a date", "payments", {"period": "2006-03-01"}, "period_month", "year_month"),
    ("paid 2006-04-31", "payments", {"paid": "2006-04-31"}, "paid_date", "date"),
    ("kind unknown", "payments", {"kind": "REFUND"}, "kind", "code"),
    # prescriptions
    ("prescription_id empty", "prescriptions", {"prescription_id": ""}, "prescription_id", "not_empty"),
    ("prescription_id 33 chars", "prescriptions", {"prescription_id": "R" * 33}, "prescription_id", "max_32_chars"),
    ("prescription version 0", "prescriptions", {"version": "0"}, "version", "version_at_least_1"),
    ("prescription version x", "prescriptions", {"version": "x"}, "version", "integer"),
    ("prescription measure unknown", "prescriptions", {"measure": "CUI"}, "measure", "code"),
    ("prescription department 975", "prescriptions", {"department": "975"}, "department", "code"),
    ("prescriber empty", "prescriptions", {"prescriber": ""}, "prescriber_id", "not_empty"),
    ("prescribed date invalid", "prescriptions", {"prescribed": "2006-02-30"}, "prescribed_date", "date"),
    ("prescription status unknown", "prescriptions", {"status": "OPEN"}, "status", "code"),
    ("CONVERTED without contract", "prescriptions", {"status": "CONVERTED"}, "contract_id",
     "contract_id_iff_converted"),
    ("ISSUED with contract", "prescriptions", {"status": "ISSUED", "contract_id": "C1"}, "contract_id",
     "contract_id_iff_converted"),
    ("EXPIRED with contract", "prescriptions", {"status": "EXPIRED", "contract_id": "C1"}, "contract_id",
     "contract_id_iff_converted"),
    # envelopes
    ("region 99", "envelopes", {"region": "99"}, "region_code", "code"),
    ("department 14 as region", "envelopes", {"region": "14"}, "region_code", "code"),
    ("region empty", "envelopes", {"region": ""}, "region_code", "not_empty"),
    ("envelope measure unknown", "envelopes", {"measure": "CUI"}, "measure", "code"),
    ("envelope version 0", "envelopes", {"version": "0"}, "version", "version_at_least_1"),
    ("year not integer", "envelopes", {"year": "2006.5"}, "year", "integer"),
    ("physical negative", "envelopes", {"physical": "-1"}, "physical_envelope", "physical_envelope_not_negative"),
    ("physical not integer", "envelopes", {"physical": "4000.5"}, "physical_envelope", "integer"),
    ("financial negative", "envelopes", {"financial": "-0.01"}, "financial_envelope_eur",
     "financial_envelope_not_negative"),
    ("financial comma", "envelopes", {"financial": "19000000,00"}, "financial_envelope_eur", "decimal"),
    ("decided date invalid", "envelopes", {"decided": "2006-13-01"}, "decided_date", "date"),
    # a wrong number of fields (column NULL: the line as a whole is wrong)
    ("contract one field too many", "contracts", {"append": ";extra"}, None, "field_count"),
    ("contract one field too few", "contracts", {"keep": 19}, None, "field_count"),
    ("contract two fields", "contracts", {"keep": 2}, None, "field_count"),
    ("contract one field", "contracts", {"keep": 1}, None, "field_count"),
    ("contract trailing empty field", "contracts", {"append": ";"}, None, "field_count"),
    ("payment one field too many", "payments", {"append": ";x"}, None, "field_count"),
    ("payment one field too few", "payments", {"keep": 5}, None, "field_count"),
    ("prescription one field too few", "prescriptions", {"keep": 7}, None, "field_count"),
    ("envelope one field too many", "envelopes", {"append": ";2006-01-03"}, None, "field_count"),
]

# (case id, file, overrides of a row that is valid though close to a limit)
ACCEPTED = [
    ("contract_id 32 chars", "contracts", {"contract_id": ID_32}),
    ("age 16", "contracts", {"birth_year": "1990"}),
    ("age 70", "contracts", {"birth_year": "1936"}),
    ("weekly_hours 48", "contracts", {"hours": "48"}),
    ("weekly_hours 48.00", "contracts", {"hours": "48.00"}),
    ("weekly_hours 0.5", "contracts", {"hours": "0.5"}),
    ("subsidy_rate 1", "contracts", {"rate": "1"}),
    ("subsidy_rate 0.000001", "contracts", {"rate": "0.000001"}),
    ("monthly aid 0", "contracts", {"aid": "0"}),
    ("department 2A", "contracts", {"department": "2A"}),
    ("department 2B", "contracts", {"department": "2B"}),
    ("department 971", "contracts", {"department": "971"}),
    ("department 976", "contracts", {"department": "976"}),
    ("department 01", "contracts", {"department": "01"}),
    ("department 95", "contracts", {"department": "95"}),
    ("no prescriber nor prescription", "contracts", {"prescriber": "", "prescription": ""}),
    ("signed = start = planned end", "contracts", {"signed": "2006-03-13", "planned_end": "2006-03-13"}),
    ("signed before start", "contracts", {"signed": "2006-02-01"}),
    ("ENDED on its start day", "contracts", {**ENDED, "actual_end": "2006-03-13"}),
    ("ENDED after planned end", "contracts", {**ENDED, "actual_end": "2006-10-01"}),
    ("ENDED hired", "contracts", {**ENDED, "end_reason": "EMBAUCHE"}),
    ("CANCELLED", "contracts", {"status": "CANCELLED"}),
    ("CIRMA", "contracts", {"measure": "CIRMA", "category": "RMI", "employer_type": "ENTREPRISE"}),
    ("male TH", "contracts", {"sex": "M", "category": "TH"}),
    ("negative RECOVERY", "payments", {"amount": "-580.52", "kind": "RECOVERY"}),
    ("positive RECOVERY", "payments", {"amount": "580.52", "kind": "RECOVERY"}),
    ("REGULARISATION", "payments", {"amount": "116.10", "kind": "REGULARISATION"}),
    ("payment_id 32 chars", "payments", {"payment_id": "P" * 32}),
    ("period 2006-12", "payments", {"period": "2006-12"}),
    ("CONVERTED with contract", "prescriptions", {"status": "CONVERTED", "contract_id": "C1"}),
    ("EXPIRED", "prescriptions", {"status": "EXPIRED"}),
    ("prescription CANCELLED", "prescriptions", {"status": "CANCELLED"}),
    ("envelope zero", "envelopes", {"physical": "0", "financial": "0"}),
    ("envelope region 01", "envelopes", {"region": "01"}),
    ("envelope region 94", "envelopes", {"region": "94"}),
]

CASES = [(c[0], c[1], c[2], c[3], c[4]) for c in REJECTED] + [(c[0], c[1], c[2], "-", "-") for c in ACCEPTED]
CASE_INDEX = {c[0]: i for i, c in enumerate(CASES)}
assert len(CASE_INDEX) == len(CASES), "case ids must be unique"


def case_day(i: int) -> date:
    return date(2005, 1, 1) + timedelta(days=i)


def good_rows(kind: str, i: int) -> tuple[str, str]:
    """The valid rows around case i's row (keys of their own)."""
    return {
        "contracts": lambda: (contract(f"A{i}"), contract(f"B{i}")),
        "payments": lambda: (payment(f"PA{i}", f"A{i}"), payment(f"PB{i}", f"A{i}")),
        "prescriptions": lambda: (prescription(f"RA{i}"), prescription(f"RB{i}")),
        "envelopes": lambda: (envelope(year=1900 + i, measure="CAE"), envelope(year=1900 + i, measure="CIE")),
    }[kind]()


def good_keys(kind: str, i: int) -> list[str]:
    return {"contracts": [f"A{i}", f"B{i}"], "payments": [f"PA{i}", f"PB{i}"],
            "prescriptions": [f"RA{i}", f"RB{i}"], "envelopes": ["CAE", "CIE"]}[kind]


def case_row(kind: str, i: int, overrides: dict) -> str:
    """Case i's row: the builder's valid row with its own key, then `overrides`."""
    overrides = dict(overrides)
    fields = overrides.pop("fields", {})
    append = overrides.pop("append", "")
    keep = overrides.pop("keep", None)
    key = {"contracts": {"contract_id": f"X{i}"}, "payments": {"payment_id": f"PX{i}", "contract_id": f"A{i}"},
           "prescriptions": {"prescription_id": f"RX{i}"}, "envelopes": {"year": 1900 + i, "measure": "CAV"}}[kind]
    values = BUILD[kind](**{**key, **overrides}).split(";")
    header = HEADERS[f"{kind}.csv"].split(";")
    for column, text in fields.items():
        values[header.index(column)] = text
    return ";".join(values[:keep]) + append


def case_drop(root: Path, i: int, kind: str, row: str) -> Path:
    first, last = good_rows(kind, i)
    files = {f"{kind}.csv": [first, row, last]}
    if kind == "payments":
        files["contracts.csv"] = [contract(f"A{i}")]
    return write_drop(root, case_day(i).isoformat(), files)


def case_counts(kind: str, file_counts: tuple) -> dict[str, tuple]:
    other = {"contracts": (1, 1, 0, 0, 0, 0)} if kind == "payments" else {}
    return expected_counts(**other, **{kind: file_counts})


@dataclass
class Batch:
    outcomes: dict[date, DropOutcome]
    rejects: dict[date, list[tuple]]
    keys: dict[tuple[str, date], list[str]]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    """Every case's drop, loaded by one call into one warehouse, read back once."""
    root = tmp_path_factory.mktemp("rule_cases")
    for i, (_, kind, overrides, _, _) in enumerate(CASES):
        case_drop(root / "drops", i, kind, case_row(kind, i, overrides))
    wh = Warehouse(root / "wh.duckdb")
    result = load_drops(wh, [root / "drops"])
    assert [d.outcome for d in result.drops] == ["loaded"] * len(CASES)
    rejected: dict[date, list[tuple]] = defaultdict(list)
    keys: dict[tuple[str, date], list[str]] = defaultdict(list)
    with wh.connect() as con:
        for day, *rest in con.sql('SELECT drop_date, file, line, "column", rule, raw FROM rejects '
                                  "ORDER BY drop_date, file, line, rule").fetchall():
            rejected[day].append(tuple(rest))
        for kind, (table, column) in CURRENT.items():
            for day, key in con.sql(f"SELECT drop_date, {column} FROM {table} ORDER BY 1, 2").fetchall():
                keys[(kind, day)].append(key)
    return Batch({d.date: d for d in result.drops}, rejected, keys)


def params(cases):
    return [pytest.param(CASE_INDEX[case[0]], *case[1:5], id=case[0], marks=case[5:]) for case in cases]


@pytest.mark.parametrize("i, kind, overrides, column, rule", params(REJECTED))
def test_a_row_breaking_one_rule_is_rejected_and_the_others_load(batch, i, kind, overrides, column, rule):
    day, row = case_day(i), case_row(kind, i, overrides)

    assert batch.rejects[day] == [(f"{kind}.csv", 3, column, rule, row)]
    assert batch.keys[(kind, day)] == good_keys(kind, i)
    assert counts(batch.outcomes[day]) == case_counts(kind, (3, 2, 0, 0, 1, 0))


@pytest.mark.parametrize("i, kind", [pytest.param(CASE_INDEX[c[0]], c[1], id=c[0]) for c in ACCEPTED])
def test_a_row_at_a_limit_is_accepted(batch, i, kind):
    day = case_day(i)

    assert batch.rejects[day] == []
    assert len(batch.keys[(kind, day)]) == 3
    assert counts(batch.outcomes[day]) == case_counts(kind, (3, 3, 0, 0, 0, 0))


@pytest.mark.parametrize("case_id", ["department 20", "contract one field too many", "amount 0",
                                     "CONVERTED without contract", "department 14 as region", "age 70"])
def test_a_case_loaded_alone_gives_what_it_gave_among_the_others(batch, tmp_path, case_id):
    i = CASE_INDEX[case_id]
    _, kind, overrides, _, _ = CASES[i]
    outcome = load_one(tmp_path, case_drop(tmp_path / "drops", i, kind, case_row(kind, i, overrides)))

    assert rejects(tmp_path) == batch.rejects[case_day(i)]
    assert counts(outcome) == counts(batch.outcomes[case_day(i)])
    table, column = CURRENT[kind]
    alone = [k for (k,) in query(tmp_path, f"SELECT {column} FROM {table} ORDER BY 1")]
    assert alone == batch.keys[(kind, case_day(i))]


def test_accepted_values_are_stored_typed(tmp_path):
    row = contract("C9", hours="48", rate="1", aid="0", birth_year="1936", department="2A", **ENDED)
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [row]}))
    assert query(
        tmp_path,
        "SELECT weekly_hours, subsidy_rate, monthly_aid_eur, beneficiary_birth_year, department, actual_end_date, "
        "end_reason, status, end_date, drop_date FROM contracts WHERE contract_id = 'C9'",
    ) == [(Decimal("48.00"), Decimal("1.000000"), Decimal("0.00"), 1936, "2A", date(2006, 5, 31), "TERME", "ENDED",
           date(2006, 5, 31), date(2006, 3, 14))]


def test_a_row_breaking_two_rules_reports_both(tmp_path):
    bad = contract("CX", department="20", hours="26,5")
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(), bad]}))
    assert rejects(tmp_path) == [
        ("contracts.csv", 3, "department", "code", bad),
        ("contracts.csv", 3, "weekly_hours", "decimal", bad),
    ]
    assert counts(outcome)["contracts.csv"] == (2, 1, 0, 0, 1, 0)
    assert query(tmp_path, "SELECT contract_id FROM contracts") == [("C1",)]


def test_a_row_breaking_a_format_and_a_cross_rule_reports_both(tmp_path):
    bad = contract("CX", measure="CUI", birth_year="1991")
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [bad]}))
    assert rejects(tmp_path) == [
        ("contracts.csv", 2, "beneficiary_birth_year", "age_at_start_16_to_70", bad),
        ("contracts.csv", 2, "measure", "code", bad),
    ]


def test_field_count_lines_among_other_rejects_keep_their_line(tmp_path):
    lines = [contract("C1"), "C2;1", contract("C3", department="20"), contract("C4") + ";x", contract("C5"),
             payment("P1")]
    drop = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": lines})
    outcome = load_one(tmp_path, drop)
    assert rejects(tmp_path) == [
        ("contracts.csv", 3, None, "field_count", "C2;1"),
        ("contracts.csv", 4, "department", "code", lines[2]),
        ("contracts.csv", 5, None, "field_count", lines[3]),
        ("contracts.csv", 7, None, "field_count", lines[5]),
    ]
    assert query(tmp_path, "SELECT contract_id FROM contracts ORDER BY 1") == [("C1",), ("C5",)]
    assert counts(outcome)["contracts.csv"] == (6, 2, 0, 0, 4, 0)


def test_rejects_are_recorded_with_the_drop_and_its_load(tmp_path):
    bad = contract("CX", department="20")
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(), bad]}))
    assert query(tmp_path, "SELECT r.load_id = d.load_id, r.drop_date, d.outcome FROM rejects r, load_drops d") == [
        (True, date(2006, 3, 14), "loaded")
    ]
    assert query(tmp_path, "SELECT file, rows_read, rows_loaded, rows_rejected FROM load_files ORDER BY file") == [
        ("contracts.csv", 2, 1, 1), ("payments.csv", 0, 0, 0), ("prescriptions.csv", 0, 0, 0)
    ]


# --------------------------------------------------------------------------- versions across drops

# kind: (current table, history table, key columns, builder with the key fixed, a change, the changed
# column with its value before and after the change)
VERSIONED = {
    "contracts": ("contracts", "contract_versions", "contract_id",
                  lambda version, **kw: contract("C1", version=version, **kw), {"hours": "35"},
                  ("weekly_hours", Decimal("26.00"), Decimal("35.00"))),
    "prescriptions": ("prescriptions", "prescription_versions", "prescription_id",
                      lambda version, **kw: prescription("PR1", version=version, **kw), {"prescriber": "ALE-14-BAYEUX"},
                      ("prescriber_id", "ALE-14-CAEN", "ALE-14-BAYEUX")),
    "envelopes": ("envelopes", "envelope_versions", "year, region_code, measure",
                  lambda version, **kw: envelope(version=version, **kw), {"physical": "4120"},
                  ("physical_envelope", 4000, 4120)),
}
KEY = {"contracts": ("C1",), "prescriptions": ("PR1",), "envelopes": (2006, "25", "CAE")}


def same_version_other_content(kind: str) -> str:
    _, _, _, build, change, _ = VERSIONED[kind]
    return build(1, **change)


# scenario: the rows of each kind in each successive drop (one load call per drop)
VERSION_SCENARIOS = {
    "stale": lambda build, change: [[build(2, **change)], [build(1)]],
    "higher": lambda build, change: [[build(1)], [build(2, **change)]],
    "identical": lambda build, change: [[build(1)], [build(1)]],
    "conflict": lambda build, change: [[build(1)], [build(1, **change)]],
    "twice in one file": lambda build, change: [[build(1), build(1, **change), build(1)]],
}


@dataclass
class Scenario:
    outcomes: list[DropOutcome]
    rejects: list[tuple]
    current: dict[str, list[tuple]]  # kind -> (key..., version, changed column, drop_date)
    history: dict[str, list[tuple]]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> dict[str, Scenario]:
    """Each scenario in its own warehouse; its drops carry the three versioned kinds side by side."""
    out = {}
    for name, steps in VERSION_SCENARIOS.items():
        root = tmp_path_factory.mktemp(name.replace(" ", "_"))
        per_kind = {kind: steps(spec[3], spec[4]) for kind, spec in VERSIONED.items()}
        outcomes = []
        for n, day in enumerate([DAY1, DAY2][: len(per_kind["contracts"])]):
            drop = write_drop(root / "drops", day, {f"{kind}.csv": rows[n] for kind, rows in per_kind.items()})
            outcomes.append(load_one(root, drop))
        current, history = {}, {}
        for kind, (table, versions, keys, _, _, (column, _, _)) in VERSIONED.items():
            current[kind] = query(root, f"SELECT {keys}, version, {column}, drop_date FROM {table} ORDER BY ALL")
            history[kind] = query(root, f"SELECT {keys}, version, {column}, drop_date FROM {versions} ORDER BY ALL")
        out[name] = Scenario(outcomes, rejects(root), current, history)
    return out


@pytest.mark.parametrize("kind", list(VERSIONED))
def test_a_lower_version_after_a_higher_one_is_stale_not_rejected(scenarios, kind):
    s, (_, before, after) = scenarios["stale"], VERSIONED[kind][5]
    assert counts(s.outcomes[0])[f"{kind}.csv"] == (1, 1, 0, 0, 0, 0)
    assert counts(s.outcomes[1])[f"{kind}.csv"] == (1, 0, 0, 1, 0, 0)
    assert s.rejects == []
    assert s.current[kind] == [(*KEY[kind], 2, after, date(2006, 3, 14))]
    assert s.history[kind] == [(*KEY[kind], 1, before, date(2006, 3, 15)), (*KEY[kind], 2, after, date(2006, 3, 14))]


@pytest.mark.parametrize("kind", list(VERSIONED))
def test_a_higher_version_replaces_the_current_state(scenarios, kind):
    s, (_, before, after) = scenarios["higher"], VERSIONED[kind][5]
    assert counts(s.outcomes[1])[f"{kind}.csv"] == (1, 1, 0, 0, 0, 0)
    assert s.rejects == []
    assert s.current[kind] == [(*KEY[kind], 2, after, date(2006, 3, 15))]
    assert s.history[kind] == [(*KEY[kind], 1, before, date(2006, 3, 14)), (*KEY[kind], 2, after, date(2006, 3, 15))]


@pytest.mark.parametrize("kind", list(VERSIONED))
def test_an_identical_resend_is_unchanged(scenarios, kind):
    s, (_, before, _) = scenarios["identical"], VERSIONED[kind][5]
    assert counts(s.outcomes[1])[f"{kind}.csv"] == (1, 0, 1, 0, 0, 0)
    assert s.rejects == []
    assert s.current[kind] == s.history[kind] == [(*KEY[kind], 1, before, date(2006, 3, 14))]


@pytest.mark.parametrize("kind", list(VERSIONED))
def test_same_version_other_content_is_a_conflict_and_the_first_stands(scenarios, kind):
    s, (_, before, _) = scenarios["conflict"], VERSIONED[kind][5]
    assert counts(s.outcomes[1])[f"{kind}.csv"] == (1, 0, 0, 0, 1, 0)
    assert [r for r in s.rejects if r[0] == f"{kind}.csv"] == [
        (f"{kind}.csv", 2, "version", "version_conflict", same_version_other_content(kind))]
    assert s.current[kind] == s.history[kind] == [(*KEY[kind], 1, before, date(2006, 3, 14))]


@pytest.mark.parametrize("kind", list(VERSIONED))
def test_same_version_twice_in_one_file_first_line_stands(scenarios, kind):
    s, (_, before, _) = scenarios["twice in one file"], VERSIONED[kind][5]
    # lines: 2 the first version, 3 the same version with other content, 4 the first again
    assert counts(s.outcomes[0])[f"{kind}.csv"] == (3, 1, 1, 0, 1, 0)
    assert [r for r in s.rejects if r[0] == f"{kind}.csv"] == [
        (f"{kind}.csv", 3, "version", "version_conflict", same_version_other_content(kind))]
    assert s.current[kind] == s.history[kind] == [(*KEY[kind], 1, before, date(2006, 3, 14))]


def test_equal_values_written_differently_are_unchanged(tmp_path):
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(hours="26", rate="0.90")]}))
    second = load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {
        "contracts.csv": [contract(hours="26.00", rate="0.9", prescriber='"ALE-14-CAEN"')]}))
    assert counts(second)["contracts.csv"] == (1, 0, 1, 0, 0, 0)
    assert rejects(tmp_path) == []


def test_a_rejected_row_does_not_use_up_its_version(tmp_path):
    first = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(department="20")]}))
    second = load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract(hours="35")]}))
    assert counts(first)["contracts.csv"] == (1, 0, 0, 0, 1, 0)
    assert counts(second)["contracts.csv"] == (1, 1, 0, 0, 0, 0)
    assert query(tmp_path, "SELECT contract_id, version, weekly_hours, drop_date FROM contracts") == [
        ("C1", 1, Decimal("35.00"), date(2006, 3, 15))]
    assert [r[:4] for r in rejects(tmp_path)] == [("contracts.csv", 2, "department", "code")]


def test_a_rejected_row_in_the_same_file_does_not_use_up_its_version(tmp_path):
    bad, good = contract(department="20"), contract(hours="35")
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [bad, good]}))
    assert counts(outcome)["contracts.csv"] == (2, 1, 0, 0, 1, 0)
    assert query(tmp_path, "SELECT contract_id, version, weekly_hours FROM contracts") == [
        ("C1", 1, Decimal("35.00"))]
    assert rejects(tmp_path) == [("contracts.csv", 2, "department", "code", bad)]


def test_stale_counts_do_not_depend_on_loading_drops_together(tmp_path):
    d1 = write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(version=2, hours="35")]})
    d2 = write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract(version=1)]})
    result = load(tmp_path, d1, d2)
    assert [counts(d)["contracts.csv"] for d in result.drops] == [(1, 1, 0, 0, 0, 0), (1, 0, 0, 1, 0, 0)]



@pytest.mark.parametrize("together", [True, False], ids=["one load", "a load per drop"])
def test_a_version_behind_an_earlier_drop_is_stale_even_between_two_higher_ones(tmp_path, together):
    """Drops: v1; v3; then v2 (behind v3) and v4 in one file. Expected by hand: v2 stale, the
    others new; v4 current; the history holds all four, each with the drop that brought it."""
    days = [DAY1, DAY2, DAY3]
    rows = [[contract(version=1)], [contract(version=3, hours="30")],
            [contract(version=2, hours="28"), contract(version=4, hours="35")]]
    drops = [write_drop(tmp_path / "drops", day, {"contracts.csv": r}) for day, r in zip(days, rows)]
    result = load(tmp_path, *drops) if together else LoadResult([load_one(tmp_path, d) for d in drops])
    assert [counts(d)["contracts.csv"] for d in result.drops] == [
        (1, 1, 0, 0, 0, 0), (1, 1, 0, 0, 0, 0), (2, 1, 0, 1, 0, 0)]
    assert query(tmp_path, "SELECT version, weekly_hours FROM contracts") == [(4, Decimal("35.00"))]
    assert query(tmp_path, "SELECT version, drop_date::VARCHAR FROM contract_versions ORDER BY 1") == [
        (1, DAY1), (2, DAY3), (3, DAY2), (4, DAY3)]
    assert query(tmp_path, "SELECT version FROM contract_superseded ORDER BY 1") == [(1,), (2,), (3,)]

# --------------------------------------------------------------------------- payments

def test_a_payment_resent_identical_is_unchanged(tmp_path):
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract()], "payments.csv": [payment()]}))
    second = load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"payments.csv": [payment(amount="816.1")]}))
    assert counts(second)["payments.csv"] == (1, 0, 1, 0, 0, 0)
    assert rejects(tmp_path) == []
    assert query(tmp_path, "SELECT payment_id, amount_eur, drop_date FROM payments") == [
        ("P1", Decimal("816.10"), date(2006, 3, 14))]


def test_a_payment_resent_with_other_fields_is_a_conflict(tmp_path):
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract()], "payments.csv": [payment()]}))
    other = payment(amount="900.00")
    second = load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"payments.csv": [other]}))
    assert counts(second)["payments.csv"] == (1, 0, 0, 0, 1, 0)
    assert rejects(tmp_path) == [("payments.csv", 2, "payment_id", "payment_conflict", other)]
    assert query(tmp_path, "SELECT payment_id, amount_eur, drop_date FROM payments") == [
        ("P1", Decimal("816.10"), date(2006, 3, 14))]


def test_a_payment_twice_in_one_file_with_other_fields_is_a_conflict(tmp_path):
    other = payment(kind="REGULARISATION")
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract()], "payments.csv": [payment(), other, payment()]}))
    assert counts(outcome)["payments.csv"] == (3, 1, 1, 0, 1, 0)
    assert rejects(tmp_path) == [("payments.csv", 3, "payment_id", "payment_conflict", other)]
    assert query(tmp_path, "SELECT payment_id, kind FROM payments") == [("P1", "AID")]


def test_a_payment_for_an_unknown_contract_is_held_then_loaded(tmp_path):
    lines = [payment("P1", contract_id="C1"), payment("P2", contract_id="C2", amount="-10.00", kind="RECOVERY")]
    first = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract("C1")], "payments.csv": lines}))
    assert counts(first)["payments.csv"] == (2, 1, 0, 0, 0, 1)
    assert query(tmp_path, "SELECT payment_id, contract_id, amount_eur, drop_date, file, line FROM held_payments") == [
        ("P2", "C2", Decimal("-10.00"), date(2006, 3, 14), "payments.csv", 3)]
    assert query(tmp_path, "SELECT payment_id FROM payments") == [("P1",)]
    assert rejects(tmp_path) == []
    status = json.loads(CliRunner().invoke(cli_main(), ["-w", str(tmp_path / "wh.duckdb"), "status", "--format", "json"],
                                           catch_exceptions=False).stdout)
    assert (status["held_payments"], status["payments"], status["rejected_rows"]) == (1, 1, 0)

    # a later drop without the contract: still held
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract("C3")]}))
    assert query(tmp_path, "SELECT payment_id FROM held_payments") == [("P2",)]

    # the contract arrives, in department 50 for measure CIE
    result = load(tmp_path, write_drop(tmp_path / "drops", DAY3, {
        "contracts.csv": [contract("C2", measure="CIE", department="50", employer_type="ENTREPRISE")]}))
    assert result.released_payments == 1
    assert query(tmp_path, "SELECT count(*) FROM held_payments") == [(0,)]
    assert query(tmp_path, "SELECT payment_id, contract_id, amount_eur, kind, drop_date, department, measure "
                           "FROM payments ORDER BY 1") == [
        ("P1", "C1", Decimal("816.10"), "AID", date(2006, 3, 14), "14", "CAE"),
        ("P2", "C2", Decimal("-10.00"), "RECOVERY", date(2006, 3, 14), "50", "CIE"),
    ]


def test_held_counts_do_not_depend_on_loading_drops_together(tmp_path):
    d1 = write_drop(tmp_path / "drops", DAY1, {"payments.csv": [payment(contract_id="C2")]})
    d2 = write_drop(tmp_path / "drops", DAY2, {"contracts.csv": [contract("C2")]})
    result = load(tmp_path, d1, d2)
    assert [counts(d)["payments.csv"] for d in result.drops] == [(1, 0, 0, 0, 0, 1), NOTHING]
    assert result.released_payments == 1


def test_a_held_payment_resent_before_its_contract_is_unchanged(tmp_path):
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"payments.csv": [payment(contract_id="C2")]}))
    second = load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"payments.csv": [payment(contract_id="C2")]}))
    assert counts(second)["payments.csv"] == (1, 0, 1, 0, 0, 0)
    other = payment(contract_id="C2", amount="1.00")
    third = load_one(tmp_path, write_drop(tmp_path / "drops", DAY3, {"payments.csv": [other]}))
    assert counts(third)["payments.csv"] == (1, 0, 0, 0, 1, 0)
    assert rejects(tmp_path) == [("payments.csv", 2, "payment_id", "payment_conflict", other)]
    assert query(tmp_path, "SELECT payment_id, amount_eur, drop_date FROM held_payments") == [
        ("P1", Decimal("816.10"), date(2006, 3, 14))]


def test_a_payment_whose_contract_row_is_rejected_is_held(tmp_path):
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract(department="20")], "payments.csv": [payment()]}))
    assert counts(outcome) == expected_counts(contracts=(1, 0, 0, 0, 1, 0), payments=(1, 0, 0, 0, 0, 1))
    assert query(tmp_path, "SELECT payment_id FROM held_payments") == [("P1",)]


def test_a_payment_for_a_contract_of_the_same_drop_loads_directly(tmp_path):
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract("C7", measure="CIE", department="2B", employer_type="ENTREPRISE")],
        "payments.csv": [payment(contract_id="C7")]}))
    assert counts(outcome) == expected_counts(contracts=(1, 1, 0, 0, 0, 0), payments=(1, 1, 0, 0, 0, 0))
    assert query(tmp_path, "SELECT payment_id, department, measure FROM payments") == [("P1", "2B", "CIE")]
    assert query(tmp_path, "SELECT count(*) FROM held_payments") == [(0,)]


def test_payments_follow_their_contracts_new_department(tmp_path):
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract(), contract("C2")], "payments.csv": [payment(), payment("P2", contract_id="C2")]}))
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {
        "contracts.csv": [contract(version=2, department="61", measure="CAV")]}))
    assert query(tmp_path, "SELECT payment_id, department, measure, drop_date FROM payments ORDER BY 1") == [
        ("P1", "61", "CAV", date(2006, 3, 14)), ("P2", "14", "CAE", date(2006, 3, 14))]
    # a stale version does not move them back
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY3, {"contracts.csv": [contract(version=1)]}))
    assert query(tmp_path, "SELECT payment_id, department, measure FROM payments ORDER BY 1") == [
        ("P1", "61", "CAV"), ("P2", "14", "CAE")]


def test_cancelled_contracts_load(tmp_path):
    outcome = load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {
        "contracts.csv": [contract("C1", status="CANCELLED")], "payments.csv": [payment()]}))
    assert counts(outcome) == expected_counts(contracts=(1, 1, 0, 0, 0, 0), payments=(1, 1, 0, 0, 0, 0))
    assert query(tmp_path, "SELECT contract_id, status FROM contracts") == [("C1", "CANCELLED")]
    assert query(tmp_path, "SELECT contract_id, status FROM contract_versions") == [("C1", "CANCELLED")]


# --------------------------------------------------------------------------- the rejects command

def cli(tmp_path, *args):
    result = CliRunner().invoke(cli_main(), ["-w", str(tmp_path / "wh.duckdb"), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def rejects_warehouse(tmp_path_factory):
    """Three drops with rejects; returns (warehouse folder, the two rejected rows)."""
    tmp_path = tmp_path_factory.mktemp("cli")
    bad1 = contract("CX", department="20", prescriber='"ALE ""Caen""; Sud"')
    bad2 = payment("PX", amount="0")
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY1, {"contracts.csv": [contract(), bad1]}))
    load_one(tmp_path, write_drop(tmp_path / "drops", DAY2, {"payments.csv": [payment(), "P9;C1"]}))
    assert load(tmp_path, write_drop(tmp_path / "drops", DAY3, {"payments.csv": [bad2]})).ok
    return tmp_path, (bad1, bad2)


def test_cli_rejects_csv(rejects_warehouse):
    tmp_path, (bad1, bad2) = rejects_warehouse
    out = cli(tmp_path, "rejects", "--format", "csv")
    raw1 = '"' + bad1.replace('"', '""') + '"'
    assert out.splitlines() == [
        "drop;file;line;column;rule;raw",
        f"2006-03-14;contracts.csv;3;department;code;{raw1}",
        '2006-03-15;payments.csv;3;;field_count;"P9;C1"',
        f"2006-03-16;payments.csv;2;amount_eur;amount_not_zero;\"{bad2}\"",
    ]


def test_cli_rejects_json_and_drop_filter(rejects_warehouse):
    tmp_path, (bad1, bad2) = rejects_warehouse
    every = json.loads(cli(tmp_path, "rejects", "--format", "json"))
    assert every == [
        {"drop": "2006-03-14", "file": "contracts.csv", "line": 3, "column": "department", "rule": "code",
         "raw": bad1},
        {"drop": "2006-03-15", "file": "payments.csv", "line": 3, "column": None, "rule": "field_count",
         "raw": "P9;C1"},
        {"drop": "2006-03-16", "file": "payments.csv", "line": 2, "column": "amount_eur", "rule": "amount_not_zero",
         "raw": bad2},
    ]
    assert json.loads(cli(tmp_path, "rejects", "--drop", "2006-03-16", "--format", "json")) == every[2:]
    assert cli(tmp_path, "rejects", "--drop", "2006-03-15", "--format", "csv").splitlines() == [
        "drop;file;line;column;rule;raw", '2006-03-15;payments.csv;3;;field_count;"P9;C1"']
    assert json.loads(cli(tmp_path, "rejects", "--drop", "2006-03-17", "--format", "json")) == []


def test_cli_rejects_table_explains_the_rules(rejects_warehouse):
    tmp_path, _ = rejects_warehouse
    out = cli(tmp_path, "rejects")
    assert "rules:" in out
    assert "  amount_not_zero: amount_eur must not be zero" in out.splitlines()
    assert "  field_count: the line does not have as many fields as the header" in out.splitlines()
