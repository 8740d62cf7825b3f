"""The alert state machine through a sequence of hand-made drops, with the emails received by a real SMTP
server on loopback (STARTTLS + authentication): each threshold fires once, a re-run sends nothing, a revised
envelope resolves; scopes; NO DATA and ERROR states; a crash mid-send then a re-run (no duplicate).

The fixture: Basse-Normandie (region_2005 25: departments 14, 50, 61) and Île-de-France (11: department 75)
each have a CAE financial envelope of 10 000,00 EUR for 2006; payments are made to contract C1 (Calvados, 14)
and C2 (Paris, 75), so the consumption is the sum of the payments over 10 000.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from smtpkit import (PASSWORD, SENDER, certificate, client_context, parsed, server_context,  # noqa: F401
                     starttls)

from dropkit import contract, envelope, load_one, payment, write_drop
from pilotage.reports.alerts import (alert_history, alert_states, format_history, format_states, parse_rules,
                                     run_alerts)
import pilotage.reports.alerts.evaluate as evaluate_module
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.config import Config
from pilotage.reports.delivery.smtp import send_message
from pilotage.warehouse import Warehouse

ENV = {"TEST_SMTP_PASSWORD": PASSWORD}
CONSUMPTION = """
rules:
  - name: consommation-financiere
    indicator: financial_consumption
    by: [region_2005, measure]
    condition: {above: [75 %, 90 %, 100 %]}
    severity: [info, warning, critical]
    once_per: year
    recipients: [scope]
"""
RECIPIENTS = """address;name;scope
caen@example.org;DR Basse-Normandie;region_2005:25
paris@example.org;DR Île-de-France;region_2005:11
normandie@example.org;DR Normandie;region_2016:28
dg@example.org;Direction générale;national
"""


@pytest.fixture
def setup(tmp_path, starttls):
    handler, settings = starttls
    (tmp_path / "recipients.csv").write_text(RECIPIENTS, encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(CONSUMPTION, encoding="utf-8")
    config = Config(warehouse=tmp_path / "wh.duckdb", drops=tmp_path / "drops", output=tmp_path / "out",
                    recipients=tmp_path / "recipients.csv", alerts=tmp_path / "alerts.yml",
                    archive=tmp_path / "out" / "deliveries.sqlite", smtp=settings, sender=SENDER, weekday=0)
    return handler, config


def drop(tmp_path: Path, day: str, **files) -> None:
    load_one(tmp_path, write_drop(tmp_path / "drops", day, {f"{k}.csv": v for k, v in files.items()}))


def first_drop(tmp_path: Path) -> None:
    # Basse-Normandie: 7 000 / 10 000 = 70 %, below 75 %; Île-de-France: 8 000 / 10 000 = 80 %: 75 % fires
    drop(tmp_path, "2006-03-13",
         contracts=[contract("C1", department="14", start="2006-01-09"),
                    contract("C2", department="75", start="2006-01-09")],
         envelopes=[envelope(region="25", physical="100", financial="10000.00"),
                    envelope(region="11", physical="100", financial="10000.00")],
         payments=[payment("P1", "C1", period="2006-02", paid="2006-03-13", amount="7000.00"),
                   payment("P2", "C2", period="2006-02", paid="2006-03-13", amount="8000.00")])


def run(config, client_context, **kwargs):
    logged = []
    result = run_alerts(config, ssl_context=client_context, environ=ENV, log=logged.append, **kwargs)
    return result


def inbox(handler) -> dict[str, list]:
    """Messages received since the last call, by recipient."""
    got: dict[str, list] = {}
    for received in handler.received:
        (to,) = received["to"]
        got.setdefault(to, []).append(parsed(received))
    handler.received.clear()
    return got


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_each_threshold_fires_once_a_rerun_sends_nothing_a_revised_envelope_resolves(setup, tmp_path,
                                                                                     client_context):
    handler, config = setup
    first_drop(tmp_path)
    result = run(config, client_context)
    assert [(e.member_label, e.threshold, e.change) for e in result.changes] == [
        ("Île-de-France · CAE", "above 0.75", "fired")]
    got = inbox(handler)
    assert sorted(got) == ["dg@example.org", "paris@example.org"]  # not Caen, not Normandie: not their region
    (message,) = got["paris@example.org"]
    assert message["Subject"] == "Alertes pilotage : 1 déclenchée — Île-de-France"
    text = body(message)
    assert "Consommation de l'enveloppe financière : 80,0 % (seuil 75 %)" in text
    assert "* [Information] Consommation de l'enveloppe financière — Île-de-France · CAE" in text
    assert "Basse-Normandie" not in text
    html = message.get_body(("html",)).get_content()
    assert "80,0 % (seuil 75 %)" in html and "<script" not in html

    # + 600: 7 600 / 10 000 = 76 %: Basse-Normandie crosses 75 %, seen by Caen, Normandie (2016) and the DG
    drop(tmp_path, "2006-03-14", payments=[payment("P3", "C1", period="2006-03", paid="2006-03-14", amount="600.00")])
    result = run(config, client_context)
    assert [(e.member_label, e.threshold, e.from_state, e.to_state) for e in result.changes] == [
        ("Basse-Normandie · CAE", "above 0.75", "OK", "FIRING")]
    got = inbox(handler)
    assert sorted(got) == ["caen@example.org", "dg@example.org", "normandie@example.org"]
    assert "Consommation de l'enveloppe financière : 76,0 % (seuil 75 %)" in body(got["caen@example.org"][0])
    assert "Île-de-France" not in body(got["caen@example.org"][0])

    # + 1 500: 9 100 / 10 000 = 91 %: 90 % fires (75 % already fired: not again)
    drop(tmp_path, "2006-03-15", payments=[payment("P4", "C1", period="2006-03", paid="2006-03-15", amount="1500.00")])
    result = run(config, client_context)
    assert [(e.threshold, e.change) for e in result.changes] == [("above 0.9", "fired")]
    got = inbox(handler)
    assert sorted(got) == ["caen@example.org", "dg@example.org", "normandie@example.org"]
    text = body(got["caen@example.org"][0])
    assert "Consommation de l'enveloppe financière : 91,0 % (seuil 90 %)" in text and "seuil 75 %" not in text

    # the same data again: same states, no change, no message, the states untouched
    before = alert_states(Warehouse(config.warehouse))
    result = run(config, client_context)
    assert result.changes == [] and result.sent == [] and inbox(handler) == {}
    assert alert_states(Warehouse(config.warehouse)) == before

    # the envelope revised to 20 000: 9 100 / 20 000 = 45,5 %: both alerts resolved, in one message each
    drop(tmp_path, "2006-03-16", envelopes=[envelope(region="25", version=2, physical="100", financial="20000.00",
                                                     decided="2006-03-16")])
    result = run(config, client_context)
    assert sorted((e.threshold, e.change) for e in result.changes) == [("above 0.75", "resolved"),
                                                                        ("above 0.9", "resolved")]
    got = inbox(handler)
    assert sorted(got) == ["caen@example.org", "dg@example.org", "normandie@example.org"]
    (message,) = got["caen@example.org"]
    assert message["Subject"] == "Alertes pilotage : 2 levées — Basse-Normandie"
    assert body(message).count("Consommation de l'enveloppe financière : 45,5 %") == 2
    assert run(config, client_context).sent == [] and inbox(handler) == {}

    warehouse = Warehouse(config.warehouse)
    firing = [(r["member_label"], r["threshold"], r["since"]) for r in alert_states(warehouse, state="FIRING")]
    assert firing == [("Île-de-France · CAE", "above 0.75", date(2006, 3, 13))]
    emailed = [(h["member_label"], h["threshold"], h["change"]) for h in alert_history(warehouse, emailed_only=True)]
    assert emailed == [("Basse-Normandie · CAE", "above 0.9", "resolved"),
                       ("Basse-Normandie · CAE", "above 0.75", "resolved"),
                       ("Basse-Normandie · CAE", "above 0.9", "fired"),
                       ("Basse-Normandie · CAE", "above 0.75", "fired"),
                       ("Île-de-France · CAE", "above 0.75", "fired")]
    assert all(h["notified_at"] is not None for h in alert_history(warehouse, emailed_only=True))
    sent = Archive(config.archive).history(kind="alert", status="sent")
    assert len(sent) == 2 + 3 + 3 + 3 * 2  # one delivery per change and recipient
    listing = format_states(alert_states(warehouse, state="FIRING"))
    assert "Île-de-France · CAE" in listing and "80,0 % (seuil 75 %)" in listing
    assert format_history(alert_history(warehouse, limit=2)).count("resolved") == 2


def test_members_without_envelope_are_no_data_and_never_emailed(setup, tmp_path, client_context):
    handler, config = setup
    first_drop(tmp_path)
    run(config, client_context)
    states = {(r["member"], r["threshold"]): r for r in alert_states(Warehouse(config.warehouse))}
    no_envelope = states[("region_2005=25|measure=CIE", "above 0.75")]
    assert (no_envelope["state"], no_envelope["value"]) == ("NO DATA", None)
    assert no_envelope["detail"] == "Consommation de l'enveloppe financière : aucune valeur (pas d'enveloppe ?)"
    assert states[("region_2005=25|measure=CAE", "above 0.75")]["state"] == "OK"
    assert states[("region_2005=25|measure=CAE", "above 0.75")]["value"] == pytest.approx(0.70)
    # members evaluated for the first time without data make no event, and nobody hears of them
    assert [h["to_state"] for h in alert_history(Warehouse(config.warehouse))] == ["FIRING"]
    assert sorted(inbox(handler)) == ["dg@example.org", "paris@example.org"]


def test_a_failing_rule_is_in_error_the_others_are_evaluated_and_recovery_sends_nothing_twice(
        setup, tmp_path, client_context, monkeypatch):
    handler, config = setup
    rules = parse_rules(CONSUMPTION + """
  - name: stock-national
    indicator: stock
    condition: {above: 1}
    recipients: [dg@example.org]
""")
    first_drop(tmp_path)
    run(config, client_context, rules=rules)
    got = inbox(handler)
    assert sorted(got) == ["dg@example.org", "paris@example.org"]
    assert "Contrats en cours : 2 (seuil 1)" in body(got["dg@example.org"][0])  # C1 and C2 in force

    real = evaluate_module._values

    def broken(cube, rule, as_of):
        if rule.name == "consommation-financiere":
            raise RuntimeError("disk on fire")
        return real(cube, rule, as_of)

    monkeypatch.setattr(evaluate_module, "_values", broken)
    result = run(config, client_context, rules=rules)
    assert result.errors == {"consommation-financiere": "RuntimeError: disk on fire"}
    warehouse = Warehouse(config.warehouse)
    states = alert_states(warehouse, rule="consommation-financiere")
    assert {r["state"] for r in states} == {"ERROR"}
    paris = next(r for r in states if r["member"] == "region_2005=11|measure=CAE" and r["threshold"] == "above 0.75")
    assert paris["firing"] and "disk on fire" in paris["detail"]
    assert alert_states(warehouse, rule="stock-national")[0]["state"] == "FIRING"  # still evaluated
    assert inbox(handler) == {}  # an error is not emailed

    monkeypatch.setattr(evaluate_module, "_values", real)
    result = run(config, client_context, rules=rules)
    assert inbox(handler) == {}  # back to FIRING: it had fired already, nobody hears of it again
    assert [(e.from_state, e.to_state, e.change) for e in result.changes
            if e.member == "region_2005=11|measure=CAE" and e.threshold == "above 0.75"] == [("ERROR", "FIRING", None)]


def test_a_rule_failing_from_the_start_has_one_error_row(setup, tmp_path, client_context, monkeypatch):
    handler, config = setup
    first_drop(tmp_path)
    monkeypatch.setattr(evaluate_module, "_values", lambda cube, rule, as_of: 1 / 0)
    result = run(config, client_context)
    assert [(e.member, e.to_state) for e in result.changes] == [("*", "ERROR")] * 3
    assert {r["member_label"] for r in alert_states(Warehouse(config.warehouse))} == {"toute la règle"}
    monkeypatch.undo()
    result = run(config, client_context)
    assert alert_states(Warehouse(config.warehouse), state="ERROR") == []
    assert sorted(inbox(handler)) == ["dg@example.org", "paris@example.org"]


class Crash(BaseException):
    """The process dying in the middle of the sending."""


def test_a_crash_mid_send_then_a_rerun_sends_no_duplicate(setup, tmp_path, client_context):
    handler, config = setup
    first_drop(tmp_path)  # Île-de-France fires: the DG and Paris are to hear of it (in that order)
    calls = []

    def dying(message, settings, **kwargs):
        calls.append(message["To"])
        if len(calls) == 2:
            raise Crash()
        return send_message(message, settings, **kwargs)

    with pytest.raises(Crash):
        run(config, client_context, send=dying)
    assert [r["to"] for r in handler.received] == [["dg@example.org"]]
    result = run(config, client_context)
    assert result.changes == []  # recorded by the run that died
    assert result.sent == [("paris@example.org", 1)]
    assert sorted(inbox(handler)) == ["dg@example.org", "paris@example.org"]  # each once
    assert run(config, client_context).sent == [] and inbox(handler) == {}


def test_a_permanent_refusal_is_recorded_and_the_others_get_theirs(setup, tmp_path, client_context):
    handler, config = setup
    handler.refused["paris@example.org"] = "550 5.1.1 No such mailbox"
    first_drop(tmp_path)
    result = run(config, client_context)
    assert [a for a, _ in result.failures] == ["paris@example.org"] and "550" in result.failures[0][1]
    assert sorted(inbox(handler)) == ["dg@example.org"]
    (failed,) = Archive(config.archive).history(kind="alert", status="failed")
    assert failed.recipient == "paris@example.org"
    assert result.problems[0].startswith("not delivered to paris@example.org: ")
    assert result.summary().endswith("1 change(s) of state (1 fired, 0 resolved), 1 message(s) sent, 1 not delivered")
    # refused for good: the change counts as notified, the next run does not insist
    assert run(config, client_context).sent == [] and inbox(handler) == {}


def test_a_dry_run_records_and_sends_nothing(setup, tmp_path, client_context):
    handler, config = setup
    first_drop(tmp_path)
    result = run(config, client_context, dry_run=True)
    assert [(e.member_label, e.change) for e in result.changes] == [("Île-de-France · CAE", "fired")]
    assert result.planned == [("dg@example.org", 1), ("paris@example.org", 1)]
    assert inbox(handler) == {} and alert_states(Warehouse(config.warehouse)) == []
