"""The weekly summaries, end to end: hand-made drops -> warehouse -> `send weekly` -> a real SMTP server on
loopback (aiosmtpd, STARTTLS with a self-signed certificate and authentication).

The fixture's figures, computed by hand. Week 2006-W11 runs Monday 13 to Sunday 19 March 2006; its five
working days each have a drop:

    contract  department (region 2005)         start        measure
    C1        14 Calvados (25 Basse-Normandie)  2006-03-13   CAE
    C2        50 Manche (25 Basse-Normandie)    2006-03-14   CIE
    C3        76 Seine-Maritime (23 H.-Norm.)   2006-03-15   CAE

so the week's entries are 3 for the nation, 2 for region 25, 1 for Manche, and the stock at the end of
the week the same (nobody leaves before September).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from openpyxl import load_workbook
from smtpkit import (PASSWORD, USER, Handler, certificate, client_context, parsed, plain_server,  # noqa: F401
                     serve, server_context)

from chartkit import warm_charts  # noqa: F401
from dropkit import contract, load, write_drop
from pilotage.reports.delivery.archive import Archive
from pilotage.reports.delivery.config import load_config
from pilotage.reports.delivery.message import CHART_CID, attachment_digests
from pilotage.reports.delivery.weekly import send_weekly

WEEK = "2006-W11"
WEEK_DAYS = ["2006-03-13", "2006-03-14", "2006-03-15", "2006-03-16", "2006-03-17"]
NEXT_WEEK_DAYS = ["2006-03-20", "2006-03-21", "2006-03-22", "2006-03-23", "2006-03-24"]
pytestmark = pytest.mark.usefixtures("warm_charts")

RECIPIENTS = """address;name;scope
dg@example.org;Direction générale;national
caen@example.org;DR Basse-Normandie;region_2005:25
manche@example.org;UT Manche;department:50
"""
CONTRACTS = {
    "2006-03-13": [contract("C1", department="14", start="2006-03-13", measure="CAE")],
    "2006-03-14": [contract("C2", department="50", start="2006-03-14", measure="CIE", employer_type="ENTREPRISE",
                            rate="0.40")],
    "2006-03-15": [contract("C3", department="76", start="2006-03-15", measure="CAE")],
}


def drops(root: Path, days: list[str], contracts: dict[str, list[str]] | None = None) -> list[Path]:
    contracts = CONTRACTS if contracts is None else contracts
    return [write_drop(root, day, {"contracts.csv": contracts.get(day, [])}) for day in days]


def write_config(folder: Path, port: int, security: str = "none", **smtp) -> Path:
    (folder / "recipients.csv").write_text(RECIPIENTS, encoding="utf-8")
    extra = "".join(f'{key} = "{value}"\n' if isinstance(value, str) else f"{key} = {value}\n"
                    for key, value in smtp.items())
    (folder / "pilotage.toml").write_text(f"""
[paths]
warehouse = "w.duckdb"
drops = "drops"
output = "out"
recipients = "recipients.csv"

[smtp]
host = "127.0.0.1"
port = {port}
security = "{security}"
timeout = 5
attempts = 3
backoff = 0.01
{extra}
[mail]
sender = "Pilotage <pilotage@example.org>"
""", encoding="utf-8")
    return folder / "pilotage.toml"


@pytest.fixture
def service(tmp_path, plain_server):
    """A warehouse holding week 11, the recipients, a configuration pointing at the plain SMTP server."""
    handler, port = plain_server
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", WEEK_DAYS)).ok
    return load_config(write_config(tmp_path, port)), handler


def by_recipient(handler) -> dict[str, email.message.EmailMessage]:
    messages = {}
    for received in handler.received:
        (to,) = received["to"]
        assert to not in messages, f"{to} received two messages"
        messages[to] = parsed(received)
    return messages


def attachment(message, suffix: str) -> tuple[str, bytes]:
    (part,) = [p for p in message.iter_attachments() if p.get_filename().endswith(suffix)]
    return part.get_filename(), part.get_payload(decode=True)


def workbook_text(data: bytes) -> str:
    book = load_workbook(io.BytesIO(data))
    return "\n".join(str(cell) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True)
                     for cell in row if cell is not None)


def tile(html: str, indicator: str) -> str:
    marker = f'data-indicator="{indicator}">'
    start = html.index(marker) + len(marker)
    return html[start:html.index("<", start)]


def test_each_recipient_gets_its_scope_over_starttls(tmp_path, server_context, client_context, certificate):
    handler = Handler()
    from smtpkit import authenticator

    controller, port = serve(handler, tls_context=server_context, require_starttls=True, authenticator=authenticator,
                             auth_required=True, auth_require_tls=True)
    try:
        assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", WEEK_DAYS)).ok
        config = load_config(write_config(tmp_path, port, "starttls", user=USER, password_env="TEST_SMTP_PASSWORD"))
        run = send_weekly(config, WEEK, ssl_context=client_context, environ={"TEST_SMTP_PASSWORD": PASSWORD})
    finally:
        controller.stop()
    assert [d.status for d in run.deliveries] == ["sent"] * 3
    assert all(r["tls"] and r["login"] == USER.encode() for r in handler.received)
    got = by_recipient(handler)
    assert set(got) == {"dg@example.org", "caen@example.org", "manche@example.org"}
    assert got["caen@example.org"]["Subject"] == "Synthèse hebdomadaire — Basse-Normandie — semaine 11 (2006-W11)"
    assert got["manche@example.org"]["Subject"] == "Synthèse hebdomadaire — Manche — semaine 11 (2006-W11)"
    assert got["dg@example.org"]["Subject"] == "Synthèse hebdomadaire — France entière — semaine 11 (2006-W11)"

    # the body's tiles: the week's entries and stock in each scope (hand-computed above)
    bodies = {to: m.get_body(("html",)).get_content() for to, m in got.items()}
    assert [tile(bodies[to], "entries") for to in ("dg@example.org", "caen@example.org", "manche@example.org")] \
        == ["3", "2", "1"]
    assert [tile(bodies[to], "stock") for to in ("dg@example.org", "caen@example.org", "manche@example.org")] \
        == ["3", "2", "1"]
    # no other region's or department's figures, in the body or in the attachments
    for to, foreign in (("caen@example.org", ["Seine-Maritime", "Haute-Normandie"]),
                        ("manche@example.org", ["Calvados", "Seine-Maritime", "Haute-Normandie"])):
        name, workbook = attachment(got[to], ".xlsx")
        _, report = attachment(got[to], ".html")
        texts = {"body": bodies[to], "workbook": workbook_text(workbook), "report": report.decode()}
        for where, text in texts.items():
            for word in foreign:
                assert word not in text, (to, where, word)
        assert "Manche" in texts["workbook"]
    assert "Calvados" in workbook_text(attachment(got["caen@example.org"], ".xlsx")[1])
    assert "Seine-Maritime" in bodies["dg@example.org"] or "Haute-Normandie" in \
        workbook_text(attachment(got["dg@example.org"], ".xlsx")[1])

    # the inline chart: a PNG in the body's multipart/related, shown by cid
    for message in got.values():
        assert f'src="cid:{CHART_CID}"' in message.get_body(("html",)).get_content()
        related = next(p for p in message.walk() if p.get_content_type() == "multipart/related")
        image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
        assert image["Content-ID"] == f"<{CHART_CID}>"
        assert image.get_content().startswith(b"\x89PNG\r\n\x1a\n") and len(image.get_content()) > 5000
        assert "Entrées" in message.get_body(("plain",)).get_content()

    # the archive: each delivery, its figures' known_at and its attachments' sha256 as received
    archived = {m.recipient: m for m in Archive(config.archive).history("weekly", WEEK)}
    assert {m.status for m in archived.values()} == {"sent"}
    for to, message in got.items():
        assert archived[to].known_at == "2006-03-17"
        assert archived[to].subject == message["Subject"]
        assert list(archived[to].attachments) == attachment_digests(message)
        assert archived[to].figures[WEEK]["entries"] == {"dg@example.org": 3, "caen@example.org": 2,
                                                         "manche@example.org": 1}[to]


def test_never_twice_unless_resend(service):
    config, handler = service
    assert len(send_weekly(config, WEEK).of("sent")) == 3
    again = send_weekly(config, WEEK)
    assert [d.status for d in again.deliveries] == ["already sent"] * 3
    assert len(handler.received) == 3
    resent = send_weekly(config, WEEK, only=["caen@example.org"], resend=True)
    assert [(d.recipient.address, d.status) for d in resent.deliveries] == [("caen@example.org", "sent")]
    assert [r["to"] for r in handler.received][-1] == ["caen@example.org"]
    assert [m.generation for m in Archive(config.archive).history("weekly", WEEK, "caen@example.org")] == [1, 2]


def test_a_week_with_a_drop_missing_is_held_unless_forced(tmp_path, plain_server):
    handler, port = plain_server
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", WEEK_DAYS[:4])).ok  # no Friday
    config = load_config(write_config(tmp_path, port))
    run = send_weekly(config, WEEK)
    assert run.held and "2006-03-17" in run.held and "--force" in run.held
    assert run.deliveries == [] and handler.received == []
    forced = send_weekly(config, WEEK, force=True)
    assert len(forced.of("sent")) == 3


def test_public_holidays_are_not_missing(tmp_path, plain_server):
    # week 2006-W20: Monday 15 to Friday 19 May, no holiday; week 2006-W19: Monday 8 May is a holiday
    handler, port = plain_server
    days = ["2006-05-09", "2006-05-10", "2006-05-11", "2006-05-12"]
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", days, {})).ok
    config = load_config(write_config(tmp_path, port))
    run = send_weekly(config, "2006-W19", dry_run=True)
    assert run.held is None and run.check.missing == ()


def test_figures_revised_by_late_data_are_reported_once(service, tmp_path):
    config, handler = service
    send_weekly(config, WEEK)
    # week 12 arrives with a late contract of week 11 in Calvados (C4, started Thursday 16 March)
    late = {"2006-03-20": [contract("C4", department="14", start="2006-03-16", measure="CAV",
                                    employer_type="ASSOCIATION")]}
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", NEXT_WEEK_DAYS, late)).ok
    run = send_weekly(config, "2006-W12")
    revisions = {d.recipient.address: [(r.week, r.indicator, r.before, r.after) for r in d.revisions]
                 for d in run.deliveries}
    assert revisions == {
        "dg@example.org": [(WEEK, "stock", 3, 4), (WEEK, "entries", 3, 4)],
        "caen@example.org": [(WEEK, "stock", 2, 3), (WEEK, "entries", 2, 3)],
        "manche@example.org": [],  # Calvados is not in Manche's scope
    }
    got = by_recipient(type("H", (), {"received": handler.received[3:]}))
    body = got["caen@example.org"].get_body(("html",)).get_content()
    assert "Chiffres révisés" in body and "Semaine 11 de 2006 — Entrées : 2 → 3 (+1)" in body
    assert "Chiffres révisés" not in got["manche@example.org"].get_body(("html",)).get_content()
    # the next summary does not repeat it: week 12's message recorded week 11 as it is now
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", ["2006-03-27", "2006-03-28", "2006-03-29",
                                                                    "2006-03-30", "2006-03-31"], {})).ok
    third = send_weekly(config, "2006-W13")
    assert [d.revisions for d in third.deliveries] == [(), (), ()]


def test_dry_run_builds_everything_and_sends_nothing(service):
    config, handler = service
    run = send_weekly(config, WEEK, dry_run=True)
    assert [d.status for d in run.deliveries] == ["dry run"] * 3 and handler.received == []
    for delivery in run.deliveries:
        eml = [f for f in delivery.files if f.name == "message.eml"][0]
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["To"].addresses[0].addr_spec == delivery.recipient.address
    assert Archive(config.archive).history("weekly") == []


def test_temporary_refusals_then_success_and_a_permanent_one_for_one_recipient(service):
    config, handler = service
    handler.temporary = 2  # the first two RCPT answered 451
    handler.refused["manche@example.org"] = "550 5.1.1 Mailbox unknown"
    run = send_weekly(config, WEEK, sleep=lambda s: None)
    status = {d.recipient.address: (d.status, d.attempts) for d in run.deliveries}
    assert status["dg@example.org"] == ("sent", 3)
    assert status["caen@example.org"] == ("sent", 1)
    assert status["manche@example.org"][0] == "failed" and not run.ok
    failed = Archive(config.archive).history("weekly", WEEK, "manche@example.org")
    assert failed[-1].status == "failed" and "550" in failed[-1].error + (failed[-1].reply or "")
    # the address fixed, the next run sends only the one that failed
    del handler.refused["manche@example.org"]
    rerun = send_weekly(config, WEEK)
    assert {d.recipient.address: d.status for d in rerun.deliveries} == {
        "dg@example.org": "already sent", "caen@example.org": "already sent", "manche@example.org": "sent"}
    assert sorted(r["to"][0] for r in handler.received) == ["caen@example.org", "dg@example.org",
                                                            "manche@example.org"]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pilotage.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=120)


def test_a_run_killed_midway_resumes_without_duplicates(service, tmp_path):
    config, handler = service
    died = cli("send", "weekly", "--config", str(config.path), "--week", WEEK,
               env={"PILOTAGE_CRASH_AT": "weekly-sent:1"})
    assert died.returncode == 70, died.stderr
    assert len(handler.received) == 1
    again = cli("send", "weekly", "--config", str(config.path), "--week", WEEK)
    assert again.returncode == 0, again.stderr
    assert "1 already sent" in again.stdout and "2 sent" in again.stdout
    assert sorted(r["to"][0] for r in handler.received) == ["caen@example.org", "dg@example.org",
                                                            "manche@example.org"]


def test_cli_exit_codes(tmp_path, plain_server):
    handler, port = plain_server
    assert load(tmp_path / "w.duckdb", *drops(tmp_path / "drops", WEEK_DAYS[:4])).ok
    config = write_config(tmp_path, port)
    held = cli("send", "weekly", "--config", str(config), "--week", WEEK)
    assert held.returncode == 4 and "held" in held.stderr
    bad = cli("send", "weekly", "--config", str(config), "--week", WEEK, "--to", "nobody@example.org")
    assert bad.returncode == 2 and "nobody@example.org" in bad.stderr
    (tmp_path / "broken.toml").write_text(config.read_text().replace('host = "127.0.0.1"', ""))
    missing = cli("send", "weekly", "--config", str(tmp_path / "broken.toml"))
    assert missing.returncode == 2 and "smtp.host" in missing.stderr
    assert handler.received == []


def test_attachments_are_the_files_written(service):
    config, handler = service
    run = send_weekly(config, WEEK, only=["caen@example.org"])
    (delivery,) = run.deliveries
    got = by_recipient(handler)["caen@example.org"]
    digests = {d["name"]: d["sha256"] for d in attachment_digests(got)}
    for path in delivery.files:
        assert digests[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {p.suffix for p in delivery.files} == {".html", ".xlsx"}
    assert load_workbook(io.BytesIO(attachment(got, ".xlsx")[1])).sheetnames
    assert date.fromisoformat(Archive(config.archive).history("weekly")[0].known_at) == date(2006, 3, 17)


def test_recipients_of_one_scope_share_one_rendering(service):
    config, handler = service
    with open(config.recipients, "a", encoding="utf-8") as recipients:
        recipients.write("caen-2@example.org;Cellule statistique;region_2005:25\n")
    run = send_weekly(config, WEEK, only=["caen@example.org", "caen-2@example.org"])
    assert [d.status for d in run.deliveries] == ["sent", "sent"]
    first, second = run.deliveries
    assert first.files == second.files  # written once, attached to both
    got = by_recipient(handler)
    digests = [[d["sha256"] for d in attachment_digests(got[to])] for to in ("caen@example.org", "caen-2@example.org")]
    assert digests[0] == digests[1]
    assert sorted(p.name for p in (config.output / "hebdo" / WEEK / "caen-2@example.org").iterdir()) == ["message.html"]
