"""Exact indicator values on a small hand-built warehouse (expected values computed by hand).

The story straddles the ISO-year boundary: 2004-W53 runs from Monday
2004-12-27 to Sunday 2005-01-02, so 2005-01-01 is in 2004-W53.

Contracts (current state after the drop of 2005-01-10, the as-of date):
  A  CAE   dept 14 (r2005 25, r2016 28)  2004-12-27 → 2005-06-30         rate 0.90  26 h
  B  CIE   dept 76 (r2005 23, r2016 28)  2005-01-01 → 2005-01-01 (TERME) rate 0.40  35 h  one-day contract
  C  CAE   dept 75 (r2005 11)            2005-01-03 → 2005-01-09 early   rate 0.80  20 h  ends on a Sunday
  D  CAV   dept 14                       CANCELLED in the second drop
  E  CAE   dept 14                       2004-06-01 → 2004-12-31         rate 0.70  26 h
  F  CIRMA dept 2A (r2005 94)            2005-01-10 → 2005-07-09         rate 0.50  35 h
  G  CAE   dept 50 (r2005 25)            2005-01-04 → 2005-06-30         rate 0.60  20 h  (second drop)
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from dropkit import contract, envelope, payment, prescription, write_drop
from pilotage.cubes import Cube, QueryError, Scope
from pilotage.etl.loader import load_drops
from pilotage.warehouse import Warehouse


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Cube:
    root = tmp_path_factory.mktemp("cube")
    first = write_drop(root, "2005-01-03", {
        "contracts.csv": [
            contract("A", measure="CAE", department="14", start="2004-12-27", planned_end="2005-06-30",
                     rate="0.90", hours="26", prescription="PR1"),
            contract("B", measure="CIE", department="76", start="2005-01-01", planned_end="2005-01-01",
                     rate="0.40", hours="35", employer_type="ENTREPRISE"),
            contract("C", measure="CAE", department="75", start="2005-01-03", planned_end="2005-12-31",
                     rate="0.80", hours="20"),
            contract("D", measure="CAV", department="14", start="2005-01-05", planned_end="2006-01-04",
                     rate="0.75", hours="26", category="RMI"),
            contract("E", measure="CAE", department="14", start="2004-06-01", planned_end="2004-12-31",
                     rate="0.70", hours="26"),
        ],
        "payments.csv": [
            payment("P4", "D", period="2005-01", paid="2005-01-03", amount="200.00"),
            payment("P5", "E", period="2004-12", paid="2004-12-31", amount="400.00"),
        ],
        "prescriptions.csv": [
            prescription("PR1", version=1, prescribed="2004-12-20", status="ISSUED"),
            prescription("PR1", version=2, prescribed="2004-12-20", status="CONVERTED", contract_id="A"),
        ],
        "envelopes.csv": [
            envelope(2005, "25", "CAE", 1, "100", "10000.00", "2005-01-03"),
            envelope(2005, "23", "CIE", 1, "50", "5000.00", "2005-01-03"),
            envelope(2005, "11", "CAE", 1, "200", "20000.00", "2005-01-03"),
        ],
    })
    second = write_drop(root, "2005-01-10", {
        "contracts.csv": [
            contract("B", version=2, measure="CIE", department="76", start="2005-01-01", planned_end="2005-01-01",
                     actual_end="2005-01-01", end_reason="TERME", status="ENDED", rate="0.40", hours="35",
                     employer_type="ENTREPRISE"),
            contract("C", version=2, measure="CAE", department="75", start="2005-01-03", planned_end="2005-12-31",
                     actual_end="2005-01-09", end_reason="RUPTURE_EMPLOYEUR", status="ENDED", rate="0.80",
                     hours="20"),
            contract("D", version=2, measure="CAV", department="14", start="2005-01-05", planned_end="2006-01-04",
                     rate="0.75", hours="26", category="RMI", status="CANCELLED"),
            contract("F", measure="CIRMA", department="2A", start="2005-01-10", planned_end="2005-07-09",
                     rate="0.50", hours="35", category="RMI", employer_type="ENTREPRISE"),
            contract("G", measure="CAE", department="50", start="2005-01-04", planned_end="2005-06-30",
                     rate="0.60", hours="20", birth_year="1950"),
        ],
        "payments.csv": [
            payment("P1", "A", period="2004-12", paid="2005-01-05", amount="500.00"),
            payment("P2", "C", period="2005-01", paid="2005-01-07", amount="300.00"),
            payment("P3", "C", period="2005-01", paid="2005-01-10", amount="-100.00", kind="RECOVERY"),
        ],
        "prescriptions.csv": [
            prescription("PR2", department="75", prescribed="2005-01-04"),
            prescription("PR3", prescribed="2005-01-05", status="CANCELLED"),
            prescription("PR4", measure="CIE", department="76", prescribed="2005-01-06", status="CONVERTED",
                         contract_id="B"),
        ],
        "envelopes.csv": [envelope(2005, "25", "CAE", 2, "120", "12000.00", "2005-01-10")],
    })
    warehouse = Warehouse(root / "w.duckdb")
    assert load_drops(warehouse, [first, second]).ok
    return Cube(warehouse)


def rows(table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def test_flows_and_stock_by_iso_week_across_the_year_boundary(cube):
    table = cube.query(["entries", "exits", "early_exits", "stock"], by=["week"], start="2004-12-27", end="2005-01-16")
    assert table.column_names == ["week", "entries", "exits", "early_exits", "stock"]
    assert rows(table) == [
        ("2004-W53", 2, 2, 0, 1),  # A, B in; E (Fri 12-31), B (one day) out; A in force on Sunday 01-02
        ("2005-W01", 2, 1, 1, 2),  # C, G in; C out on Sunday 01-09, early; A and G in force
        ("2005-W02", 1, 0, 0, 3),  # clipped to the as-of date 01-10: F in
    ]


def test_stock_identity_holds_from_period_to_period(cube):
    table = cube.query(["entries", "exits", "stock"], by=["day"], start="2004-12-20", end="2005-01-10").to_pylist()
    for before, after in zip(table, table[1:]):
        assert after["stock"] == before["stock"] + after["entries"] - after["exits"]


def test_flows_by_region_and_week(cube):
    table = cube.query(["entries"], by=["region_2005", "week"], where={"region_2016": "28"},
                       start="2004-12-27", end="2005-01-10")
    assert rows(table) == [
        ("23", "2004-W53", 1), ("23", "2005-W01", 0), ("23", "2005-W02", 0),
        ("25", "2004-W53", 1), ("25", "2005-W01", 1), ("25", "2005-W02", 0),
    ]


def test_no_time_dimension_means_the_whole_range_and_stock_at_its_end(cube):
    table = cube.query(["entries", "exits", "stock"], start="2004-12-27", end="2005-01-09")
    assert rows(table) == [(4, 3, 2)]  # stock at 01-09, never a sum over the days


def test_payments_by_month_with_recovery_and_cancelled_contract_left_out(cube):
    table = cube.query(["payments_eur", "payments_ytd_eur"], by=["month"], start="2004-12-01", end="2005-01-31")
    assert rows(table) == [
        ("2004-12", Decimal("400.00"), Decimal("400.00")),
        ("2005-01", Decimal("700.00"), Decimal("700.00")),  # 500 + 300 - 100; D's 200 is cancelled
    ]


def test_entries_year_to_date_restarts_on_january_first(cube):
    table = cube.query(["entries", "entries_ytd"], by=["month"], start="2004-12-01")
    assert rows(table) == [("2004-12", 1, 2), ("2005-01", 4, 4)]  # 2004: E (June) and A


def test_week_year_to_date_counts_only_the_new_year_part_of_a_straddling_week(cube):
    table = cube.query(["entries_ytd"], by=["week"], start="2004-12-27", end="2005-01-09")
    assert rows(table) == [("2004-W53", 1), ("2005-W01", 3)]  # W53 ends 2005-01-02: only B (01-01)


def test_envelopes_consumption_and_realisation_by_region(cube):
    table = cube.query(["physical_envelope", "financial_envelope_eur", "entries_ytd", "payments_ytd_eur",
                        "physical_realisation", "financial_consumption"], by=["region_2005"],
                       where={"region_2005": ["11", "23", "25", "94"]}, start="2005-01-01")
    got = {r[0]: r[1:] for r in rows(table)}
    assert got["25"] == (120, Decimal("12000.00"), 1, Decimal("500.00"), 1 / 120, 500 / 12000)  # revised envelope
    assert got["23"] == (50, Decimal("5000.00"), 1, Decimal("0.00"), 1 / 50, 0.0)
    assert got["11"] == (200, Decimal("20000.00"), 1, Decimal("200.00"), 1 / 200, 200 / 20000)
    assert got["94"] == (None, None, 1, Decimal("0.00"), None, None)  # no envelope: no ratio


def test_envelopes_roll_up_to_2016_regions_and_nation(cube):
    normandie = cube.query(["physical_envelope", "physical_realisation"], by=["region_2016"],
                           where={"region_2016": "28"}, start="2005-01-01")
    assert rows(normandie) == [("28", 170, 2 / 170)]  # G in 25, B in 23
    nation = cube.query(["physical_envelope", "financial_envelope_eur", "financial_consumption"], start="2005-01-01")
    assert rows(nation) == [(370, Decimal("37000.00"), 700 / 37000)]


def test_envelope_of_the_year_of_the_period_last_day(cube):
    table = cube.query(["physical_envelope"], by=["month"], start="2004-12-01")
    assert rows(table) == [("2004-12", None), ("2005-01", 370)]


def test_averages_are_ratios_of_sums_at_every_level(cube):
    nation = cube.query(["avg_subsidy_rate", "avg_weekly_hours", "entries"], start="2004-12-27")
    (rate, hours, entries), = rows(nation)
    assert entries == 5
    assert rate == pytest.approx((0.90 + 0.40 + 0.80 + 0.50 + 0.60) / 5)  # 0.64, not the mean of region means
    assert hours == pytest.approx((26 + 35 + 20 + 35 + 20) / 5)
    regions = {r[0]: r[1] for r in rows(cube.query(["avg_subsidy_rate"], by=["region_2005"], start="2004-12-27"))}
    assert regions["25"] == pytest.approx(0.75) and regions["24"] is None
    by_measure = dict(rows(cube.query(["avg_subsidy_rate"], by=["measure"], start="2004-12-27")))
    assert by_measure["CAV"] is None  # D is cancelled: no entry, no average
    assert by_measure["CAE"] == pytest.approx((0.90 + 0.80 + 0.60) / 3)
    assert by_measure["CIE"] == pytest.approx(0.40) and by_measure["CIRMA"] == pytest.approx(0.50)


def test_prescriptions_and_conversion_rate(cube):
    table = cube.query(["prescriptions", "prescriptions_converted", "conversion_rate"], by=["month"],
                       start="2004-12-01")
    assert rows(table) == [("2004-12", 1, 1, 1.0), ("2005-01", 2, 1, 0.5)]  # PR3 cancelled
    empty = cube.query(["conversion_rate"], by=["measure"], where={"measure": "CIRMA"}, start="2004-12-01")
    assert rows(empty) == [("CIRMA", None)]


def test_region_totals_equal_the_nation(cube):
    measures = ["entries", "exits", "stock", "payments_eur", "prescriptions"]
    nation = cube.query(measures, by=["week"], start="2004-12-27").to_pylist()
    for geography in ("region_2005", "region_2016", "department"):
        parts = cube.query(measures, by=[geography, "week"], start="2004-12-27").to_pylist()
        for week in nation:
            for m in measures:
                assert sum(p[m] for p in parts if p["week"] == week["week"]) == week[m], (geography, m)


def test_contract_attribute_dimensions(cube):
    table = cube.query(["entries"], by=["age_band"], start="2004-01-01")
    assert rows(table) == [("<26", 2), ("26-49", 3), ("50+", 1)]  # A, E in 2004 at 25; G born 1950
    by_employer = dict(rows(cube.query(["entries", "payments_eur"], by=["employer_type"], start="2004-01-01")
                            .select(["employer_type", "entries"])))
    assert by_employer["ENTREPRISE"] == 2 and by_employer["COMMUNE"] == 4
    pay = dict(rows(cube.query(["payments_eur"], by=["beneficiary_category"], start="2004-01-01")))
    assert pay["DELD"] == Decimal("1100.00") and pay["RMI"] == Decimal("0.00")


def test_known_at_reproduces_what_was_known_then(cube):
    table = cube.query(["entries", "stock", "payments_eur"], by=["week"], start="2004-12-27", known_at="2005-01-03")
    assert rows(table) == [
        ("2004-W53", 2, 1, Decimal("400.00")),
        ("2005-W01", 1, 2, Decimal("200.00")),  # as of 01-03: C in; D's payment not yet cancelled
    ]
    envelope = cube.query(["physical_envelope"], where={"region_2005": "25"}, start="2005-01-01",
                          known_at="2005-01-03")
    assert rows(envelope) == [(100,)]  # before the revision


def test_scope_restricts_and_where_cannot_widen(cube):
    normandie = Scope.of("region_2016", "28")
    assert rows(cube.query(["entries"], scope=normandie, start="2004-12-27")) == [(3,)]  # A, B, G
    assert rows(cube.query(["entries"], by=["region_2005"], scope=normandie, start="2004-12-27")) == [
        ("23", 1), ("25", 2)]
    widened = cube.query(["entries"], by=["region_2005"], where={"region_2005": "11"}, scope=normandie,
                         start="2004-12-27")
    assert rows(widened) == []  # Île-de-France is outside the scope: nothing, not C
    with pytest.raises(QueryError, match="cannot be restricted to a scope by department"):
        cube.query(["physical_envelope"], scope=Scope.of("department", "14"))


def test_clear_errors(cube):
    with pytest.raises(QueryError, match="unknown indicator 'entrees'; valid: entries"):
        cube.query(["entrees"])
    with pytest.raises(QueryError, match="unknown dimension 'canton'"):
        cube.query(["entries"], by=["canton"])
    with pytest.raises(QueryError, match="cannot be broken down by department"):
        cube.query(["financial_consumption"], by=["department"])
    with pytest.raises(QueryError, match="unknown region_2005 member"):
        cube.query(["entries"], where={"region_2005": "99"})
    with pytest.raises(QueryError, match="empty range"):
        cube.query(["entries"], start="2005-02-01")  # after the as-of date
    with pytest.raises(QueryError, match="at most one time dimension"):
        cube.query(["entries"], by=["week", "month"])


def test_filter_values_are_parameters_not_sql(cube):
    hostile = "CAE' OR '1'='1"
    with pytest.raises(QueryError, match="unknown measure member"):
        cube.query(["entries"], where={"measure": hostile})
    request = cube.request(["entries"], ["measure"], {"measure": "CAE"}, "2004-12-27", None, None, None,
                           date(2005, 1, 10))
    compiled = cube.compile(request)
    assert "f.measure IN ($w_measure_0)" in compiled.sql and compiled.params["w_measure_0"] == "CAE"


def test_compare_with_the_previous_period_covers_the_same_span(cube):
    table = cube.compare(["entries", "stock"], by=["week"], start="2005-01-03", how="previous").to_pylist()
    assert [(r["week"], r["entries"], r["entries_previous"], r["stock"], r["stock_previous"]) for r in table] == [
        ("2005-W01", 2, 2, 2, 1),
        ("2005-W02", 1, 1, 3, 2),  # W02 is clipped to Monday 01-10: compared with Monday 01-03 (C in, not G)
    ]
    assert [r["entries_change_pct"] for r in table] == [0.0, 0.0]
    assert table[0]["stock_change_pct"] == pytest.approx(100.0)
    assert table[1]["stock_change_pct"] == pytest.approx(50.0)


def test_compare_with_the_year_before(cube):
    table = cube.compare(["payments_eur"], by=["month"], start="2005-01-01", how="year").to_pylist()
    # January 2005 (clipped to the 10th) against 2004-01-01..10: no payment then
    assert table == [{"month": "2005-01", "payments_eur": Decimal("700.00"), "payments_eur_year_before": Decimal("0.00"),
                      "payments_eur_change_pct": None}]
    whole = cube.compare(["entries"], start="2005-01-04", end="2005-01-10", how="previous").to_pylist()
    # previous span 2004-12-28..2005-01-03: B and C (A started on 12-27)
    assert whole == [{"entries": 2, "entries_previous": 2, "entries_change_pct": 0.0}]
