"""The alert rules file: the built-in rules, and every mistake refused with the file, the rule and the key."""

from __future__ import annotations

import pytest

from pilotage.reports.alerts.rules import AlertRulesError, Threshold, load_rules, parse_rules

BASE = """
rules:
  - name: r1
    indicator: financial_consumption
    by: [region_2005, measure]
    condition: {above: [75 %, 0.9]}
"""


def test_the_built_in_rules_are_the_examples_of_the_issue():
    rules = load_rules()
    assert [r.name for r in rules] == ["consommation-financiere", "realisation-en-retard", "entrees-en-baisse"]
    consumption, pace, entries = rules
    assert consumption.thresholds == (Threshold("above", 0.75, "info"), Threshold("above", 0.90, "warning"),
                                      Threshold("above", 1.0, "critical"))
    assert consumption.once_per == "year" and consumption.by == ("region_2005", "measure")
    assert (pace.kind, pace.thresholds) == ("pace", (Threshold("behind", 15.0, "warning"),))
    assert (entries.kind, entries.period, entries.change_vs, entries.periods) == ("change", "week", "mean", 4)
    assert entries.thresholds == (Threshold("below", -0.30, "warning"),)


def test_limits_are_shares_written_as_percentages_or_numbers():
    (rule,) = parse_rules(BASE)
    assert [t.limit for t in rule.thresholds] == [0.75, 0.9]
    assert rule.recipients == ("scope",) and rule.label == "Consommation de l'enveloppe financière"


@pytest.mark.parametrize("change, message", [
    (("indicator: financial_consumption", "indicator: consumption"),
     "rule r1: indicator: unknown indicator 'consumption'; valid: avg_subsidy_rate, "),
    (("by: [region_2005, measure]", "by: [region, measure]"),
     "rule r1: by: unknown dimension 'region'; valid: department, region_2005, region_2016, measure, sector"),
    (("by: [region_2005, measure]", "by: [region_2005, week]"),
     "rule r1: by: unknown dimension 'week'"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 75}"),
     "rule r1: condition.above: 75: the value watched is a share; write 75 % (or 0.75)"),
    (("condition: {above: [75 %, 0.9]}", "condition: {abov: 1}"), "rule r1: condition.abov: unknown key"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: lots}"),
     "rule r1: condition.above: 'lots' is not a number or a percentage"),
    (("condition: {above: [75 %, 0.9]}", "period: week\n    condition: {change_vs: mean, below: -30 %}"),
     "rule r1: condition.periods: the number of periods the mean is taken over"),
    (("condition: {above: [75 %, 0.9]}", "condition: {change_vs: previous, below: -30 %}"),
     "rule r1: period: a change is judged on a complete period"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 0.9}\n    severity: urgent"),
     "rule r1: severity: 'urgent' is not one of info, warning, critical"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: [0.5, 0.9]}\n    severity: [info]"),
     "rule r1: severity: one severity, or one per limit (2)"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 0.9}\n    recipients: [scope, nobody]"),
     "rule r1: recipients: 'nobody' is neither 'scope' nor an email address"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 0.9}\n    once_per: month"),
     "rule r1: once_per: 'month' is not one of year"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 0.9}\n    where: {measure: XYZ}"),
     "rule r1: where.measure: unknown member 'XYZ'"),
    (("condition: {above: [75 %, 0.9]}", "condition: {above: 0.9}\n    colour: red"),
     "rule r1: colour: unknown key; valid: name, label, indicator"),
    (("condition: {above: [75 %, 0.9]}", ""), "rule r1: condition: missing"),
])
def test_mistakes_name_the_file_the_rule_and_the_key(tmp_path, change, message):
    path = tmp_path / "alerts.yml"
    path.write_text(BASE.replace(*change), encoding="utf-8")
    with pytest.raises(AlertRulesError) as error:
        load_rules(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_the_pace_needs_a_share_and_a_rule_a_name_of_its_own(tmp_path):
    with pytest.raises(AlertRulesError, match="rule r1: condition.behind_pace_points: the pace is judged on a share"):
        parse_rules(BASE.replace("financial_consumption", "entries").replace("{above: [75 %, 0.9]}",
                                                                             "{behind_pace_points: 15}"))
    with pytest.raises(AlertRulesError, match="rule r1: name: another rule has this name"):
        parse_rules(BASE + BASE.removeprefix("\nrules:\n"))
    with pytest.raises(AlertRulesError, match=r"rule #1: name: 'Big Rule' is not a rule name"):
        parse_rules(BASE.replace("name: r1", "name: Big Rule"))
    with pytest.raises(AlertRulesError, match="file not found"):
        load_rules(tmp_path / "missing.yml")
    with pytest.raises(AlertRulesError, match=r"not valid YAML \(line"):
        parse_rules("rules:\n  - name: [", tmp_path / "x.yml")
