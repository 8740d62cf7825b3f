"""`pilotage daily`, as cron runs it (a subprocess), against a real SMTP server on loopback.

The drops: week 2006-W11 (Monday 13 to Friday 17 March) and Monday 20 March. Region 25's CAE financial
envelope is 1,000.00 EUR and its contracts were paid 800.00 EUR in March: consumption 80 %, which crosses
the 75 % threshold of the rule below (and not 90 %).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from smtpkit import parsed, plain_server  # noqa: F401 (a fixture)

from dropkit import contract, envelope, payment, query, write_drop
from pilotage.daily import daily_lock
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.config import load_config

DAYS = ["2006-03-13", "2006-03-14", "2006-03-15", "2006-03-16", "2006-03-17", "2006-03-20"]
RULES = """
rules:
  - name: consommation-financiere
    label: Consommation de l'enveloppe financière
    indicator: financial_consumption
    by: [region_2005, measure]
    condition: {above: [75 %, 90 %]}
    once_per: year
    recipients: [scope]
"""
RECIPIENTS = """address;name;scope
caen@example.org;DR Basse-Normandie;region_2005:25
rouen@example.org;DR Haute-Normandie;region_2005:23
"""


def files(day: str) -> dict:
    if day == "2006-03-13":
        return {"contracts.csv": [contract("C1", department="14", start="2006-03-13", aid="400.00"),
                                  contract("C2", department="76", start="2006-03-13", aid="400.00")],
                "envelopes.csv": [envelope(2006, "25", "CAE", physical="10", financial="1000.00"),
                                  envelope(2006, "23", "CAE", physical="10", financial="100000.00")]}
    if day == "2006-03-16":
        return {"payments.csv": [payment("P1", "C1", "2006-03", "2006-03-16", "800.00"),
                                 payment("P2", "C2", "2006-03", "2006-03-16", "800.00")]}
    return {}


@pytest.fixture
def service(tmp_path, plain_server):
    handler, port = plain_server
    for day in DAYS:
        write_drop(tmp_path / "drops", day, files(day))
    (tmp_path / "recipients.csv").write_text(RECIPIENTS, encoding="utf-8")
    (tmp_path / "alerts.yml").write_text(RULES, encoding="utf-8")
    config = tmp_path / "pilotage.toml"
    config.write_text(f"""
[paths]
warehouse = "w.duckdb"
drops = "drops"
output = "out"
recipients = "recipients.csv"
alerts = "alerts.yml"
lake = "lake"

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
timeout = 5
backoff = 0.01

[mail]
sender = "Pilotage <pilotage@example.org>"

[weekly]
weekday = "lundi"
""", encoding="utf-8")
    return config, handler


def daily(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pilotage.cli", "daily", "--config", str(config), *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def subjects(handler) -> list[tuple[str, str]]:
    return sorted((r["to"][0], parsed(r)["Subject"]) for r in handler.received)


def test_the_daily_run_does_the_days_work_once(service):
    config, handler = service
    first = daily(config, "--today", "2006-03-20")
    assert first.returncode == 0, first.stderr
    out = config.parent / "out"
    # 1. the drops loaded
    assert query(config.parent / "w.duckdb", "SELECT count(*) FROM load_drops WHERE outcome = 'loaded'") == [(6,)]
    # 2. the alert: region 25 CAE crossed 75 % (800 / 1000), to region 25's recipient only
    # 3. the daily report of the data date
    assert sorted(p.name for p in (out / "quotidien").iterdir()) == ["quotidien_2006-03-20.html",
                                                                      "quotidien_2006-03-20.xlsx"]
    # 4. Monday: the weekly summaries of week 11
    sent = subjects(handler)
    weekly = [s for s in sent if s[1].startswith("Synthèse hebdomadaire")]
    alerts = [s for s in sent if not s[1].startswith("Synthèse hebdomadaire")]
    assert weekly == [("caen@example.org", "Synthèse hebdomadaire — Basse-Normandie — semaine 11 (2006-W11)"),
                      ("rouen@example.org", "Synthèse hebdomadaire — Haute-Normandie — semaine 11 (2006-W11)")]
    assert [to for to, _ in alerts] == ["caen@example.org"]
    alert_body = parsed(next(r for r in handler.received if r["to"] == ["caen@example.org"]
                             and not parsed(r)["Subject"].startswith("Synthèse"))).get_body(("plain",)).get_content()
    assert "80" in alert_body and "75" in alert_body
    log = (out / "logs" / "daily-2006-03-20.log").read_text(encoding="utf-8")
    assert "6 loaded" in log and "daily report: written" in log and "2 sent" in log
    assert (config.parent / "lake" / "contracts" / "year=2006").is_dir()  # exported after the load

    # the same day again: nothing twice
    report_time = (out / "quotidien" / "quotidien_2006-03-20.html").stat().st_mtime_ns
    second = daily(config, "--today", "2006-03-20")
    assert second.returncode == 0, second.stderr
    assert len(handler.received) == len(sent)
    assert (out / "quotidien" / "quotidien_2006-03-20.html").stat().st_mtime_ns == report_time
    log = (out / "logs" / "daily-2006-03-20.log").read_text(encoding="utf-8")
    assert "0 loaded" in log and "already written" in log and "2 already sent" in log
    assert "export: 0 partition(s) written" in log.split("daily run of")[-1]  # nothing changed: nothing rewritten
    assert [m.status for m in Archive(load_config(config).archive).history("weekly")] == ["sent", "sent"]


def test_two_daily_runs_at_once(service):
    config, handler = service
    with daily_lock(load_config(config)):  # a run in progress
        second = daily(config, "--today", "2006-03-20")
    assert second.returncode == 75
    assert "another daily run is in progress" in second.stderr and f"pid {os.getpid()}" in second.stderr
    assert handler.received == []
    assert not (config.parent / "w.duckdb").exists()


def test_a_refused_drop_is_reported_and_the_rest_done(service):
    config, handler = service
    (config.parent / "drops" / "2006-03-20" / "control.csv").unlink()  # an incomplete drop
    run = daily(config, "--today", "2006-03-20", "--no-weekly")
    assert run.returncode == 1
    log = (config.parent / "out" / "logs" / "daily-2006-03-20.log").read_text(encoding="utf-8")
    assert "REFUSED" in log and "2006-03-20" in log
    assert (config.parent / "out" / "quotidien" / "quotidien_2006-03-17.html").exists()
    assert not any(parsed(r)["Subject"].startswith("Synthèse") for r in handler.received)


def test_a_wrong_setting_is_named(service):
    config, _ = service
    config.write_text(config.read_text().replace('weekday = "lundi"', 'weekday = "someday"'), encoding="utf-8")
    run = daily(config)
    assert run.returncode == 2 and "weekly.weekday" in run.stderr
