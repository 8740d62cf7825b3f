"""Hand-made drops for the tests: write CSV text exactly as given, plus a matching control.csv."""

from __future__ import annotations

import hashlib
from pathlib import Path

from datetime import date

from pilotage.etl.generate import generate_drops
from pilotage.etl.loader import DropOutcome, LoadResult, load_drops
from pilotage.warehouse import Warehouse

CONTRACT_HEADER = (
    "contract_id;version;measure;department;employer_id;employer_type;prescriber_id;prescription_id;"
    "beneficiary_sex;beneficiary_birth_year;beneficiary_category;signed_date;start_date;planned_end_date;"
    "actual_end_date;end_reason;weekly_hours;subsidy_rate;monthly_aid_eur;status"
)
PAYMENT_HEADER = "payment_id;contract_id;period_month;paid_date;amount_eur;kind"
PRESCRIPTION_HEADER = "prescription_id;version;measure;department;prescriber_id;prescribed_date;status;contract_id"
ENVELOPE_HEADER = "year;region_code;measure;version;physical_envelope;financial_envelope_eur;decided_date"

HEADERS = {
    "contracts.csv": CONTRACT_HEADER,
    "payments.csv": PAYMENT_HEADER,
    "prescriptions.csv": PRESCRIPTION_HEADER,
    "envelopes.csv": ENVELOPE_HEADER,
}


def contract(contract_id="C1", version=1, measure="CAE", department="14", start="2006-03-13",
             planned_end="2006-09-12", actual_end="", end_reason="", status="ACTIVE", signed=None,
             hours="26", rate="0.90", aid="816.10", birth_year="1979", category="DELD", sex="F",
             employer="21140118300017", employer_type="COMMUNE", prescriber="ALE-14-CAEN", prescription="") -> str:
    """One contracts.csv line (fields in the header's order)."""
    signed = signed or start
    return ";".join(str(v) for v in (
        contract_id, version, measure, department, employer, employer_type, prescriber, prescription, sex,
        birth_year, category, signed, start, planned_end, actual_end, end_reason, hours, rate, aid, status))


def payment(payment_id="P1", contract_id="C1", period="2006-03", paid="2006-04-05", amount="816.10", kind="AID") -> str:
    return ";".join((payment_id, contract_id, period, paid, amount, kind))


def prescription(prescription_id="PR1", version=1, measure="CAE", department="14", prescriber="ALE-14-CAEN",
                 prescribed="2006-02-27", status="ISSUED", contract_id="") -> str:
    return ";".join(str(v) for v in (prescription_id, version, measure, department, prescriber, prescribed,
                                     status, contract_id))


def envelope(year=2006, region="25", measure="CAE", version=1, physical="4000", financial="19000000.00",
             decided="2006-01-02") -> str:
    return ";".join(str(v) for v in (year, region, measure, version, physical, financial, decided))


def write_drop(root: Path, day: str, files: dict[str, list[str] | bytes | str] | None = None,
               control: bool = True, newline: str = "\n") -> Path:
    """Write drop `root/day/`. Values: list of data lines (header added), or raw text/bytes written as is.

    contracts, payments and prescriptions default to a header-only file.
    """
    files = dict(files or {})
    for name in ("contracts.csv", "payments.csv", "prescriptions.csv"):
        files.setdefault(name, [])
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, content in files.items():
        if isinstance(content, list):
            data = newline.join([HEADERS[name], *content]) + newline
            data = data.encode()
            count = len(content)
        else:
            data = content.encode() if isinstance(content, str) else content
            lines = [l for l in data.split(b"\n")[1:] if l.strip(b"\r")]
            count = len(lines)
        (folder / name).write_bytes(data)
        rows.append(f"{name};{count};{hashlib.sha256(data).hexdigest()}")
    if control:
        (folder / "control.csv").write_text("file;rows;sha256\n" + "\n".join(rows) + "\n")
    return folder


def warehouse(path: Path) -> Warehouse:
    """The warehouse file `path`, or `path/wh.duckdb` for a folder."""
    return Warehouse(path if path.suffix == ".duckdb" else path / "wh.duckdb")


def load(path: Path, *drops: Path) -> LoadResult:
    return load_drops(warehouse(path), list(drops))


def load_one(path: Path, drop: Path) -> DropOutcome:
    result = load(path, drop)
    assert [d.outcome for d in result.drops] == ["loaded"], result.drops
    return result.drops[0]


def query(path: Path, sql: str) -> list[tuple]:
    with warehouse(path).connect() as con:
        return con.sql(sql).fetchall()


def rejects(path: Path) -> list[tuple]:
    return query(path, 'SELECT file, line, "column", rule, raw FROM rejects ORDER BY file, line, rule')


def report_warehouse(tmp_path_factory) -> Path:
    """15 months of generated drops, loaded once per test session (shared by the report tests)."""
    root = tmp_path_factory.getbasetemp() / "reports-warehouse"
    if not (root / ".complete").exists():
        generate_drops(root / "drops", date(2005, 1, 1), date(2006, 3, 31), scale=0.02)
        assert load_drops(Warehouse(root / "w.duckdb"), [root / "drops"]).ok
        (root / ".complete").write_text("ok")
    return root / "w.duckdb"
