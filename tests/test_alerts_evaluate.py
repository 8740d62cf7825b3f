"""Evaluating the rules through the cube on hand-made drops: the built-in rules (change against the mean of
the last 4 weeks, pace of the year, consumption), a ratio to another indicator, one cube query per rule, and
the last complete period.

As of Tuesday 14 March 2006 (the drop's date), the last complete ISO week is 2006-W10 (6-12 March) and
73 days of 365 have elapsed: 20,0 % of the year.
"""

from __future__ import annotations

from datetime import date

import pytest

from dropkit import contract, envelope, load_one, write_drop
from pilotage.cubes import Cube
from pilotage.reports.alerts.evaluate import evaluate, last_complete
from pilotage.reports.alerts.rules import load_rules, parse_rules

MONDAYS = ["2006-02-06", "2006-02-13", "2006-02-20", "2006-02-27", "2006-03-06"]  # W06 .. W10


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Cube:
    root = tmp_path_factory.mktemp("alerts-evaluate")
    lines = []
    # entries by week W06..W10: Calvados (Basse-Normandie) 6, 6, 4, 4, then 3: mean 5, -40 %;
    # Paris (Île-de-France) 5 every week: 0 %; Seine-Maritime (Haute-Normandie) 1 a week: base 1 < min_base 5
    for department, counts in (("14", [6, 6, 4, 4, 3]), ("75", [5] * 5), ("76", [1] * 5)):
        for monday, count in zip(MONDAYS, counts):
            lines += [contract(f"C{department}-{monday}-{i}", department=department, start=monday)
                      for i in range(count)]
    # physical envelopes: Basse-Normandie 1 000 (23 entries: 2,3 %), Île-de-France 100 (25 entries: 25,0 %)
    envelopes = [envelope(region="25", physical="1000", financial="10000.00"),
                 envelope(region="11", physical="100", financial="10000.00")]
    load_one(root, write_drop(root / "drops", "2006-03-14", {"contracts.csv": lines, "envelopes.csv": envelopes}))
    return Cube(root / "wh.duckdb")


def observed(evaluation, rule: str, member: str) -> tuple[str, str]:
    (obs,) = [o for o in evaluation.observations if o.rule == rule and o.member == member]
    return obs.state, obs.detail


def test_the_built_in_rules_one_cube_query_each(cube, monkeypatch):
    calls = []
    real = Cube.query
    monkeypatch.setattr(Cube, "query", lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    evaluation = evaluate(cube, load_rules())
    assert len(calls) == 3 and evaluation.errors == {}
    assert evaluation.as_of == date(2006, 3, 14)

    assert observed(evaluation, "entrees-en-baisse", "region_2005=25|measure=CAE") == (
        "FIRING", "Entrées, semaine 10 de 2006 : 3 contre 5,0 en moyenne sur les 4 semaines précédentes, "
                  "soit -40,0 % (seuil -30 %)")
    assert observed(evaluation, "entrees-en-baisse", "region_2005=11|measure=CAE") == (
        "OK", "Entrées, semaine 10 de 2006 : 5 contre 5,0 en moyenne sur les 4 semaines précédentes, "
              "soit 0,0 % (seuil -30 %)")
    assert observed(evaluation, "entrees-en-baisse", "region_2005=23|measure=CAE") == (
        "NO DATA", "Entrées, semaine 10 de 2006 : 1 ; base trop faible (1,0 pour un minimum de 5), "
                   "pas de comparaison")
    # 20,0 % of the year elapsed - 2,3 % realised = 17,7 points behind (> 15)
    assert observed(evaluation, "realisation-en-retard", "region_2005=25|measure=CAE") == (
        "FIRING", "Réalisation de l'enveloppe physique : 2,3 % pour 20,0 % de l'année écoulée, "
                  "soit 17,7 points de retard (seuil 15 points de retard)")
    assert observed(evaluation, "realisation-en-retard", "region_2005=11|measure=CAE") == (
        "OK", "Réalisation de l'enveloppe physique : 25,0 % pour 20,0 % de l'année écoulée, "
              "soit 5 points d'avance (seuil 15 points de retard)")
    assert observed(evaluation, "realisation-en-retard", "region_2005=23|measure=CAE")[0] == "NO DATA"
    consumption = [o for o in evaluation.observations if o.rule == "consommation-financiere"
                   and o.member == "region_2005=25|measure=CAE"]
    assert [(o.threshold, o.state, o.period) for o in consumption] == [
        ("above 0.75", "OK", "2006"), ("above 0.9", "OK", "2006"), ("above 1", "OK", "2006")]
    assert consumption[0].detail == "Consommation de l'enveloppe financière : 0,0 % (seuil 75 %)"


def test_a_ratio_to_another_indicator_and_a_rule_without_breakdown(cube):
    rules = parse_rules("""
rules:
  - name: ratio
    indicator: entries_ytd
    ratio_to: physical_envelope
    by: [region_2016]
    condition: {above: 2 %}
  - name: weekly-entries
    indicator: entries
    period: week
    condition: {below: 20}
  - name: previous-week
    indicator: entries
    by: [department]
    where: {department: ["14"]}
    period: week
    condition: {change_vs: previous, below: -20 %}
""")
    evaluation = evaluate(cube, rules)
    # Normandie (2016) = Basse- and Haute-Normandie: 23 + 5 entries over the envelope of 1 000 = 2,8 %
    assert observed(evaluation, "ratio", "region_2016=28") == (
        "FIRING", "Entrées depuis le 1er janvier / Enveloppe physique : 2,8 % (seuil 2 %)")
    assert observed(evaluation, "ratio", "region_2016=11")[0] == "FIRING"  # 25 / 100
    assert observed(evaluation, "ratio", "region_2016=84")[0] == "NO DATA"  # no envelope
    assert observed(evaluation, "weekly-entries", "") == ("FIRING", "Entrées, semaine 10 de 2006 : 9 (seuil 20)")
    assert [o.member for o in evaluation.observations if o.rule == "previous-week"] == ["department=14"]
    assert observed(evaluation, "previous-week", "department=14") == (
        "FIRING", "Entrées, semaine 10 de 2006 : 3 contre 4 la semaine précédente, soit -25,0 % (seuil -20 %)")


@pytest.mark.parametrize("period, as_of, expected", [
    ("week", date(2006, 3, 14), (date(2006, 3, 6), date(2006, 3, 12))),
    ("week", date(2006, 3, 12), (date(2006, 3, 6), date(2006, 3, 12))),  # a Sunday closes its week
    ("month", date(2006, 3, 14), (date(2006, 2, 1), date(2006, 2, 28))),
    ("month", date(2006, 3, 31), (date(2006, 3, 1), date(2006, 3, 31))),
    ("quarter", date(2006, 3, 14), (date(2005, 10, 1), date(2005, 12, 31))),
    ("quarter", date(2006, 6, 30), (date(2006, 4, 1), date(2006, 6, 30))),
])
def test_the_last_complete_period(period, as_of, expected):
    assert last_complete(period, as_of) == expected
