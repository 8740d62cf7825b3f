"""Tests of the synthetic drop generator (pilotage.etl.generate).

The SPEC rules are re-stated here independently (`RULES`), as polars expressions
over the text columns, so the generator is checked against the contract and not
against itself.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pilotage.etl.generate import BAD_ROW_KINDS, build_frames, french_holidays, generate_drops, working_days

YEAR = (date(2006, 1, 1), date(2006, 12, 31))
DEPARTMENTS = {f"{i:02d}" for i in range(1, 96) if i != 20} | {"2A", "2B", "971", "972", "973", "974", "976"}
REGIONS = {"01", "02", "03", "04", "06", "11", "21", "22", "23", "24", "25", "26", "31", "41", "42", "43",
           "52", "53", "54", "72", "73", "74", "82", "83", "91", "93", "94"}
MEASURES = ["CAE", "CIE", "CAV", "CIRMA"]

# --------------------------------------------------------------------------- the SPEC, restated

col = pl.col


def _date(name: str) -> pl.Expr:
    return col(name).str.to_date("%Y-%m-%d", strict=False)


def _number(name: str) -> pl.Expr:
    return col(name).cast(pl.Float64, strict=False)


def _bad_date(*names: str) -> pl.Expr:
    return pl.any_horizontal(
        col(n).is_not_null() & (~col(n).str.contains(r"^\d{4}-\d{2}-\d{2}$") | _date(n).is_null()) for n in names)


def _empty(*names: str) -> pl.Expr:
    return pl.any_horizontal(col(n).is_null() for n in names)


def _too_long(name: str) -> pl.Expr:
    return col(name).str.len_chars() > 32


def _not_in(name: str, allowed) -> pl.Expr:
    return col(name).is_not_null() & ~col(name).is_in(list(allowed))


def _comma(*names: str) -> pl.Expr:
    return pl.any_horizontal(col(n).str.contains(",", literal=True) for n in names)


CONTRACT_RULES = {
    "empty_required": _empty("contract_id", "version", "measure", "department", "employer_id", "employer_type",
                             "beneficiary_sex", "beneficiary_birth_year", "beneficiary_category", "signed_date",
                             "start_date", "planned_end_date", "weekly_hours", "subsidy_rate", "monthly_aid_eur",
                             "status"),
    "id_too_long": _too_long("contract_id"),
    "unknown_measure": _not_in("measure", MEASURES),
    "unknown_employer_type": _not_in("employer_type", ["COMMUNE", "DEPARTEMENT", "REGION", "ETAB_PUBLIC",
                                                       "ASSOCIATION", "ENTREPRISE", "AUTRE"]),
    "unknown_sex": _not_in("beneficiary_sex", ["F", "M"]),
    "unknown_category": _not_in("beneficiary_category", ["RMI", "ASS", "API", "DELD", "JEUNE", "TH", "AUTRE"]),
    "unknown_status": _not_in("status", ["ACTIVE", "ENDED", "CANCELLED"]),
    "bad_department": _not_in("department", DEPARTMENTS),
    "bad_siret": col("employer_id").is_not_null() & ~col("employer_id").str.contains(r"^\d{14}$"),
    "bad_date": _bad_date("signed_date", "start_date", "planned_end_date", "actual_end_date"),
    "decimal_comma": _comma("weekly_hours", "subsidy_rate", "monthly_aid_eur"),
    "bad_weekly_hours": (_number("weekly_hours") <= 0) | (_number("weekly_hours") > 48),
    "bad_subsidy_rate": (_number("subsidy_rate") <= 0) | (_number("subsidy_rate") > 1),
    "negative_aid": _number("monthly_aid_eur") < 0,
    "age_out_of_range": ~(_date("start_date").dt.year()
                          - col("beneficiary_birth_year").cast(pl.Int64, strict=False)).is_between(16, 70),
    "signed_after_start": _date("signed_date") > _date("start_date"),
    "planned_end_before_start": _date("planned_end_date") < _date("start_date"),
    "actual_end_before_start": _date("actual_end_date") < _date("start_date"),
    "end_reason_without_actual_end": col("actual_end_date").is_null() & col("end_reason").is_not_null(),
    "actual_end_without_end_reason": col("actual_end_date").is_not_null() & col("end_reason").is_null(),
    "ended_without_actual_end": (col("status") == "ENDED") & col("actual_end_date").is_null(),
    "active_with_actual_end": (col("status") != "ENDED") & col("actual_end_date").is_not_null(),
    "unknown_end_reason": _not_in("end_reason",
                                  ["TERME", "RUPTURE_EMPLOYEUR", "RUPTURE_SALARIE", "EMBAUCHE", "AUTRE"]),
    "version_zero": col("version").cast(pl.Int64, strict=False) < 1,
}
PAYMENT_RULES = {
    "empty_required": _empty("payment_id", "contract_id", "period_month", "paid_date", "amount_eur", "kind"),
    "id_too_long": _too_long("payment_id"),
    "unknown_kind": _not_in("kind", ["AID", "REGULARISATION", "RECOVERY"]),
    "bad_date": _bad_date("paid_date"),
    "decimal_comma": _comma("amount_eur"),
    "zero_amount": _number("amount_eur") == 0,
    "negative_aid": (_number("amount_eur") < 0) & (col("kind") != "RECOVERY"),
    "bad_period_month": col("period_month").is_not_null()
    & ~col("period_month").str.contains(r"^\d{4}-(0[1-9]|1[0-2])$"),
}
PRESCRIPTION_RULES = {
    "empty_required": _empty("prescription_id", "version", "measure", "department", "prescriber_id",
                             "prescribed_date", "status"),
    "id_too_long": _too_long("prescription_id"),
    "unknown_measure": _not_in("measure", MEASURES),
    "bad_department": _not_in("department", DEPARTMENTS),
    "unknown_status": _not_in("status", ["ISSUED", "CONVERTED", "EXPIRED", "CANCELLED"]),
    "bad_date": _bad_date("prescribed_date"),
    "version_zero": col("version").cast(pl.Int64, strict=False) < 1,
    "converted_without_contract": (col("status") == "CONVERTED") & col("contract_id").is_null(),
    "issued_with_contract": (col("status") != "CONVERTED") & col("contract_id").is_not_null(),
}
ENVELOPE_RULES = {
    "empty_required": _empty(*["year", "region_code", "measure", "version", "physical_envelope",
                               "financial_envelope_eur", "decided_date"]),
    "unknown_region": _not_in("region_code", REGIONS),
    "negative_envelope": (_number("physical_envelope") < 0) | (_number("financial_envelope_eur") < 0),
    "version_zero": col("version").cast(pl.Int64, strict=False) < 1,
    "bad_date": _bad_date("decided_date"),
    "decimal_comma": _comma("financial_envelope_eur"),
}
RULES = {"contracts.csv": CONTRACT_RULES, "payments.csv": PAYMENT_RULES,
         "prescriptions.csv": PRESCRIPTION_RULES, "envelopes.csv": ENVELOPE_RULES}
KEYS = {"contracts.csv": ["contract_id", "version"], "payments.csv": ["payment_id"],
        "prescriptions.csv": ["prescription_id", "version"],
        "envelopes.csv": ["year", "region_code", "measure", "version"]}


def broken_rules(file: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One boolean column per rule of the file (null counts as not broken)."""
    return frame.select(expr.fill_null(False).alias(rule) for rule, expr in RULES[file].items())


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def year_frames():
    """A year at scale 0.05, with bad rows (tagged in `_bad`)."""
    return build_frames(*YEAR, scale=0.05, seed=7, bad_rows=True)


@pytest.fixture(scope="module")
def clean_year(tmp_path_factory) -> Path:
    """A year at scale 0.05 written without bad rows."""
    out = tmp_path_factory.mktemp("clean")
    generate_drops(out, *YEAR, scale=0.05, seed=3, bad_rows=False)
    return out


def read_all(root: Path, file: str) -> pl.DataFrame:
    """Every row of one file over the drops, as text, with the drop date in `_drop`."""
    frame = pl.scan_csv(root / "*" / file, separator=";", infer_schema=False, include_file_paths="_path").collect()
    return frame.with_columns(_drop=col("_path").str.split("/").list.get(-2)).drop("_path")


# --------------------------------------------------------------------------- calendar

def test_french_holidays_2006():
    assert french_holidays(2006) == [
        date(2006, 1, 1), date(2006, 4, 17), date(2006, 5, 1), date(2006, 5, 8), date(2006, 5, 25),
        date(2006, 6, 5), date(2006, 7, 14), date(2006, 8, 15), date(2006, 11, 1), date(2006, 11, 11),
        date(2006, 12, 25)]
    assert date(2008, 3, 24) in french_holidays(2008)  # Easter Monday 2008
    assert date(2008, 5, 1) in french_holidays(2008)  # Ascension fell on May Day


def test_one_drop_per_working_day(tmp_path):
    start, end = date(2006, 4, 10), date(2006, 6, 9)
    written = generate_drops(tmp_path, start, end, scale=0.01)
    expected = [d for d in (start + timedelta(n) for n in range((end - start).days + 1))
                if d.weekday() < 5 and d not in french_holidays(2006)]
    names = [p.name for p in written]
    assert names == [d.isoformat() for d in expected] == [d.isoformat() for d in working_days(start, end)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in written]
    assert "2006-04-17" not in {p.name for p in written} and "2006-05-25" not in {p.name for p in written}


def test_no_working_day_gives_no_drop(tmp_path):
    assert generate_drops(tmp_path, date(2006, 12, 23), date(2006, 12, 25), scale=0.01) == []


# --------------------------------------------------------------------------- files

def test_deterministic(tmp_path):
    args = dict(start=date(2006, 8, 28), end=date(2006, 9, 22), scale=0.02)
    calls = []
    a = generate_drops(tmp_path / "a", seed=11, progress=calls.append, **args)
    b = generate_drops(tmp_path / "b", seed=11, **args)
    c = generate_drops(tmp_path / "c", seed=12, **args)
    assert sum(calls) == len(a) == len(b) == len(c) > 0
    for x, y in zip(a, b):
        assert sorted(f.name for f in x.iterdir()) == sorted(f.name for f in y.iterdir())
        for f in x.iterdir():
            assert f.read_bytes() == (y / f.name).read_bytes(), f
    assert any((x / "contracts.csv").read_bytes() != (z / "contracts.csv").read_bytes() for x, z in zip(a, c))


def test_control_matches_files(clean_year):
    drops = sorted(clean_year.iterdir())
    with_envelopes = 0
    for drop in drops:
        lines = (drop / "control.csv").read_text(encoding="utf-8").splitlines()
        assert lines[0] == "file;rows;sha256"
        listed = {}
        for line in lines[1:]:
            name, rows, digest = line.split(";")
            data = (drop / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest
            assert data.count(b"\n") - 1 == int(rows)  # no field spans two lines
            listed[name] = int(rows)
        assert set(listed) | {"control.csv"} == {f.name for f in drop.iterdir()}
        assert {"contracts.csv", "payments.csv", "prescriptions.csv"} <= set(listed)
        with_envelopes += "envelopes.csv" in listed
    assert "envelopes.csv" in {line.split(";")[0] for line in (drops[0] / "control.csv").read_text().splitlines()}
    assert 1 < with_envelopes < len(drops) / 2


def test_csv_dialect(clean_year):
    drop = sorted(clean_year.iterdir())[0]
    contracts = (drop / "contracts.csv").read_bytes()
    assert contracts.startswith(b"contract_id;version;measure;department;employer_id;employer_type;prescriber_id;"
                                b"prescription_id;beneficiary_sex;beneficiary_birth_year;beneficiary_category;"
                                b"signed_date;start_date;planned_end_date;actual_end_date;end_reason;weekly_hours;"
                                b"subsidy_rate;monthly_aid_eur;status\n")
    assert b"\r" not in contracts
    contracts.decode("utf-8")
    headers = {f.name: f.read_text().split("\n")[0] for f in drop.iterdir()}
    assert headers["payments.csv"] == "payment_id;contract_id;period_month;paid_date;amount_eur;kind"
    assert headers["prescriptions.csv"] == ("prescription_id;version;measure;department;prescriber_id;"
                                            "prescribed_date;status;contract_id")
    assert headers["envelopes.csv"] == ("year;region_code;measure;version;physical_envelope;"
                                        "financial_envelope_eur;decided_date")
    # fields with ; or " are quoted, and only those
    rows = [r for d in sorted(clean_year.iterdir())[:30] for r in csv.reader(
        (d / "prescriptions.csv").open(encoding="utf-8", newline=""), delimiter=";")]
    awkward = {r[4] for r in rows if ";" in r[4] or '"' in r[4]}
    assert awkward, "some prescriber names need quoting"
    text = "".join((d / "prescriptions.csv").read_text() for d in sorted(clean_year.iterdir())[:30])
    for name in awkward:
        assert '"' + name.replace('"', '""') + '"' in text
    assert text.count('"') == sum(2 + 2 * n.count('"') for r in rows for n in r if ";" in n or '"' in n)
    # decimals: money with 2 decimals, hours integer or .5, rates with 2 decimals
    contracts = read_all(clean_year, "contracts.csv")
    assert contracts["monthly_aid_eur"].str.contains(r"^\d+\.\d{2}$").all()
    assert contracts["subsidy_rate"].str.contains(r"^0\.\d{2}$").all()
    assert contracts["weekly_hours"].str.contains(r"^\d+(\.5)?$").all()
    payments = read_all(clean_year, "payments.csv")
    assert payments["amount_eur"].str.contains(r"^-?\d+\.\d{2}$").all()


# --------------------------------------------------------------------------- content

def test_good_rows_follow_the_spec(clean_year):
    for file, key in KEYS.items():
        frame = read_all(clean_year, file)
        assert frame.height > 0
        broken = broken_rules(file, frame).sum()
        assert broken.select(pl.sum_horizontal(pl.all())).item() == 0, broken
        assert frame.select(key).is_duplicated().sum() == 0, file


def test_files_read_back_as_built(clean_year):
    """What is on disk is exactly the text the generator built (duckdb reading)."""
    frames = build_frames(*YEAR, scale=0.05, seed=3, bad_rows=False)
    for file, key in KEYS.items():
        built = frames.text(file).drop("_drop", "_ord", "_bad")
        query = f"""select * from read_csv('{clean_year}/*/{file}', delim=';', quote='"', escape='"',
                    header=true, all_varchar=true)"""
        read = duckdb.sql(query).pl()
        assert read.sort(key).equals(built.sort(key)), file


def test_volumes_and_shape(year_frames):
    contracts = year_frames.text("contracts.csv").filter(col("_bad").is_null())
    entries = contracts.filter(col("version") == "1", col("start_date").str.starts_with("2006"))
    # ~250,000 a year at scale 1 (12,500 at 0.05)
    assert 11_000 < entries.height < 14_000
    share = entries["measure"].value_counts(normalize=True).sort("proportion", descending=True)
    assert share["measure"].to_list() == ["CAE", "CIE", "CAV", "CIRMA"]
    assert 0.40 < share["proportion"][0] < 0.50
    by_month = entries.group_by(col("start_date").str.slice(5, 2).alias("m")).len().sort("m")["len"].to_list()
    assert by_month[8] == max(by_month) and by_month[8] > 1.2 * sorted(by_month)[-2]  # September peak
    assert by_month[7] == min(by_month)  # August dip
    assert entries["department"].n_unique() == 101
    counts = entries["department"].value_counts()
    big = counts.filter(col("department") == "59")["count"].item()
    small = counts.filter(col("department") == "48")["count"].item()
    assert big > 10 * small  # Nord vs Lozère: by population
    # lifecycle: current state of each contract
    current = contracts.sort("version").group_by("contract_id").last()
    ended = current.filter(col("status") == "ENDED")
    early = ended.filter(col("actual_end_date") < col("planned_end_date"))
    assert 0.13 < early.height / ended.height < 0.25  # ~18% of contracts end early
    assert set(early["end_reason"]) == {"RUPTURE_EMPLOYEUR", "RUPTURE_SALARIE", "EMBAUCHE", "AUTRE"}
    assert (ended.filter(col("end_reason") == "TERME")["actual_end_date"]
            == ended.filter(col("end_reason") == "TERME")["planned_end_date"]).all()
    cancelled = contracts.filter(col("status") == "CANCELLED")
    assert 0.01 < cancelled.height / entries.height < 0.03
    assert contracts.filter(col("version") != "1")["planned_end_date"].n_unique() > 0
    renewed = contracts.join(contracts.filter(col("version") == "1").select("contract_id", p0="planned_end_date"),
                             on="contract_id").filter(col("planned_end_date") > col("p0"))
    assert renewed["contract_id"].n_unique() > 0.05 * entries.height


def test_versions_arrive_in_order(year_frames):
    for file, entity in (("contracts.csv", "contract_id"), ("prescriptions.csv", "prescription_id")):
        good = year_frames.text(file).filter(col("_bad").is_null())
        ordered = good.with_columns(col("version").cast(pl.Int64)).sort(entity, "version")
        steps = ordered.group_by(entity).agg((col("_drop").diff() >= 0).all(), (col("version").diff() == 1).all())
        assert steps["_drop"].all() and steps["version"].all(), file
    contracts = year_frames.text("contracts.csv").filter(col("_bad").is_null())
    first = contracts.filter(col("version") == "1")
    created = first.select(col("_drop").cast(pl.Date), col("signed_date").str.to_date())
    lag = (created["_drop"] - created["signed_date"]).dt.total_days()
    assert lag.filter(first["_drop"] > first["_drop"].min()).is_between(0, 4).all()  # signing day or next working one


def test_measure_profiles(year_frames):
    v1 = year_frames.text("contracts.csv").filter(col("_bad").is_null(), col("version") == "1")
    cae = v1.filter(col("measure").is_in(["CAE", "CAV"]))
    cie = v1.filter(col("measure").is_in(["CIE", "CIRMA"]))
    assert cae["weekly_hours"].cast(pl.Float64).is_between(20, 26).all()
    assert cae["subsidy_rate"].cast(pl.Float64).is_between(0.6, 0.95).all()
    assert cie["subsidy_rate"].cast(pl.Float64).is_between(0.2, 0.5).all()
    assert (cie["employer_type"] == "ENTREPRISE").mean() > 0.85
    assert (cie["weekly_hours"] == "35").mean() > 0.7
    minimum_income = v1.filter(col("measure").is_in(["CAV", "CIRMA"]))["beneficiary_category"]
    assert minimum_income.is_in(["RMI", "ASS", "API"]).all()
    lead = (col("start_date").str.to_date() - col("signed_date").str.to_date()).dt.total_days()
    assert v1.select(lead.is_between(0, 10).all()).item()


def test_first_drop_holds_the_stock(year_frames):
    contracts = year_frames.text("contracts.csv").filter(col("_bad").is_null())
    first = contracts["_drop"].min()
    stock = contracts.filter(col("_drop") == first).sort("version").group_by("contract_id").last()
    in_force = stock.filter(col("status") != "CANCELLED", col("start_date") <= "2006-01-02",
                            pl.coalesce("actual_end_date", "planned_end_date") >= "2006-01-02")
    # ~12,500 entries a year staying in force a bit more than a year on average
    assert 10_000 < in_force.height < 25_000
    assert stock["start_date"].min() < "2004-01-01"


def test_payments(year_frames):
    payments = year_frames.text("payments.csv").filter(col("_bad").is_null())
    contracts = year_frames.text("contracts.csv").filter(col("_bad").is_null())
    kinds = payments["kind"].value_counts(normalize=True)
    share = dict(zip(kinds["kind"], kinds["proportion"]))
    assert share["AID"] > 0.95 and 0.01 < share["REGULARISATION"] < 0.03 and 0.003 < share["RECOVERY"] < 0.02
    assert payments.filter(col("kind") == "RECOVERY")["amount_eur"].str.starts_with("-").all()
    assert not payments.filter(col("kind") != "RECOVERY")["amount_eur"].str.starts_with("-").any()
    assert payments["paid_date"].is_between(pl.lit("2006-01-01"), pl.lit("2006-12-31")).all()
    # about 12 aid payments per contract-year in force
    aid = payments.filter(col("kind") == "AID")
    assert aid.group_by("contract_id").len()["len"].max() <= 13
    current = contracts.sort("version").group_by("contract_id").last().filter(col("status") != "CANCELLED")
    end = pl.min_horizontal(pl.coalesce("actual_end_date", "planned_end_date").str.to_date(),
                            pl.lit(date(2006, 11, 30)))
    start = pl.max_horizontal(col("start_date").str.to_date(), pl.lit(date(2005, 12, 1)))
    days = (end - start).dt.total_days() + 1  # months paid in 2006: December 2005 to November 2006
    contract_years = current.select(days.clip(0).sum()).item() / 365.25
    assert 10 < aid.height / contract_years < 13
    # no payment for cancelled contracts
    cancelled = contracts.filter(col("status") == "CANCELLED")["contract_id"]
    assert not payments["contract_id"].is_in(cancelled.implode()).any()
    # a payment never comes before its contract, but for a few held ones
    first_drop = contracts.group_by("contract_id").agg(col("_drop").min().alias("first"))
    joined = payments.join(first_drop, on="contract_id", how="left")
    assert joined["first"].null_count() == 0
    early = joined.filter(col("_drop") < col("first"))
    assert 0 < early.height < 0.001 * payments.height
    assert early["kind"].eq("AID").all()


def test_prescriptions(year_frames):
    prescriptions = year_frames.text("prescriptions.csv").filter(col("_bad").is_null())
    contracts = year_frames.text("contracts.csv").filter(col("_bad").is_null())
    current = prescriptions.sort("version").group_by("prescription_id").last()
    settled = col("prescribed_date").is_between(pl.lit("2006-01-01"), pl.lit("2006-08-31"))  # by December
    of_2006 = current.filter(settled)
    rate = (of_2006["status"] == "CONVERTED").mean()
    assert 0.65 < rate < 0.8
    assert set(of_2006["status"]) == {"CONVERTED", "EXPIRED", "CANCELLED"}
    converted = prescriptions.filter(col("status") == "CONVERTED").join(
        contracts.filter(col("version") == "1").select("contract_id", "prescription_id", "signed_date",
                                                       pl.col("_drop").alias("contract_drop")),
        on="contract_id", how="left", suffix="_c")
    assert (converted["prescription_id"] == converted["prescription_id_c"]).all()
    assert (converted["_drop"] == converted["contract_drop"]).all()
    weeks = (converted["signed_date"].str.to_date() - converted["prescribed_date"].str.to_date()).dt.total_days()
    assert weeks.is_between(3, 45).all()
    with_prescription = contracts.filter(col("version") == "1", col("start_date") >= "2006-03-01")
    assert 0.75 < with_prescription["prescription_id"].is_not_null().mean() < 0.85


def test_envelopes(year_frames):
    envelopes = year_frames.text("envelopes.csv").filter(col("_bad").is_null())
    first = envelopes.filter(col("version") == "1")
    assert first.height == 27 * 4 and first["_drop"].n_unique() == 1
    assert set(first["region_code"]) == REGIONS
    assert envelopes.filter(col("version") != "1").height > 5
    physical = first.group_by("measure").agg(col("physical_envelope").cast(pl.Int64).sum())
    physical = dict(zip(physical["measure"], physical["physical_envelope"]))
    assert 0.9 * 0.45 * 12_500 < physical["CAE"] < 1.1 * 0.45 * 12_500
    payments = year_frames.text("payments.csv").filter(col("_bad").is_null())
    paid = payments["amount_eur"].cast(pl.Float64).sum()
    money = first["financial_envelope_eur"].cast(pl.Float64).sum()
    assert 0.7 < paid / money < 1.3


# --------------------------------------------------------------------------- bad rows

def test_every_bad_kind_is_there_and_breaks_its_rule(year_frames):
    for file, kinds in BAD_ROW_KINDS.items():
        frame = year_frames.text(file)
        bad = frame.filter(col("_bad").is_not_null())
        assert set(bad["_bad"]) == set(kinds), file
        if file != "envelopes.csv":  # spread over the year, not piled on a few rows
            assert bad["_drop"].n_unique() > min(0.2 * bad.height, 100)
            assert bad.select(KEYS[file]).n_unique() > 0.8 * bad.height
        assert bad.height < 0.01 * frame.height or file == "envelopes.csv"
        rules = broken_rules(file, frame)
        good_broken = rules.filter(frame["_bad"].is_null()).sum()
        assert good_broken.select(pl.sum_horizontal(pl.all())).item() == 0, (file, good_broken)
        for kind in set(kinds) & set(RULES[file]):
            broken = rules.filter(frame["_bad"] == kind)
            assert broken[kind].all(), (file, kind)
            # exactly one rule (a bad date may also leave the date-based rules unknown)
            assert (broken.select(pl.sum_horizontal(pl.all())).to_series() == 1).all(), (file, kind)


def test_resent_rows(year_frames):
    for file, key in KEYS.items():
        frame = year_frames.text(file)
        good = frame.filter(col("_bad").is_null())
        columns = [c for c in frame.columns if not c.startswith("_")]
        versioned = "version" in key
        entity = [k for k in key if k != "version"]
        latest = good.with_columns(_v=col("version").cast(pl.Int64) if versioned else pl.lit(1))
        for kind in ("duplicate", "conflict", "stale"):
            resent = frame.filter(col("_bad") == kind)
            if kind == "stale" and not versioned:
                assert resent.height == 0
                continue
            twins = resent.join(good, on=key, how="left", suffix="_twin")
            assert twins["_drop_twin"].null_count() == 0 and (twins["_drop"] > twins["_drop_twin"]).all()
            same = pl.all_horizontal(col(c).eq_missing(col(f"{c}_twin")) for c in columns if c not in key)
            assert twins.select(same.all() if kind != "conflict" else (~same).all()).item(), (file, kind)
            if versioned:  # a duplicate or conflict is the latest version when re-sent; a stale one is not
                sent = resent.with_columns(_v=col("version").cast(pl.Int64)).join(
                    latest, on=entity, suffix="_other").filter(col("_drop_other") <= col("_drop"))
                newest = sent.group_by(key).agg(col("_v_other").max())
                newer = (newest["_v_other"] > newest["version"].cast(pl.Int64))
                assert newer.all() if kind == "stale" else not newer.any(), (file, kind)


def test_no_bad_rows_when_asked(tmp_path):
    frames = build_frames(date(2006, 3, 1), date(2006, 3, 31), scale=0.02, bad_rows=False)
    for file in BAD_ROW_KINDS:
        assert frames.text(file)["_bad"].null_count() == frames.text(file).height


def test_bad_rows_keep_files_readable(tmp_path):
    written = generate_drops(tmp_path, date(2006, 2, 1), date(2006, 2, 28), scale=0.03, seed=5)
    total = 0
    for drop in written:
        for line in (drop / "control.csv").read_text().splitlines()[1:]:
            name, rows, _ = line.split(";")
            text = (drop / name).read_text(encoding="utf-8")
            parsed = list(csv.reader(text.splitlines(), delimiter=";"))
            assert len(parsed) == int(rows) + 1
            assert len({len(r) for r in parsed}) == 1
            total += int(rows)
    payments = read_all(tmp_path, "payments.csv")
    assert payments.height < total
