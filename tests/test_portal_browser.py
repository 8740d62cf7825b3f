"""The portal in a real browser: Debian's headless Chromium driven by Playwright, against `uvicorn` serving
the application on loopback (the warehouse and accounts are real files).

Login, the forced password change, a regional user's dashboard (its charts drawn under the CSP, no
console error) and explorer showing only its region, a forged request for another region refused, an
export downloaded and opened.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from openpyxl import load_workbook
from playwright.sync_api import sync_playwright

from dropkit import contract, load, write_drop
from pilotage.portal.accounts import Accounts
from pilotage.portal.app import PortalSettings, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAYS = ["2006-03-13", "2006-03-14", "2006-03-15", "2006-03-16", "2006-03-17"]
CONTRACTS = {
    "2006-03-13": [contract("C1", department="14", start="2006-03-13", measure="CAE")],
    "2006-03-15": [contract("C3", department="76", start="2006-03-15", measure="CAE")],
}
NEW_PASSWORD = "une phrase de passe assez longue"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    assert load(root / "w.duckdb", *[write_drop(root / "drops", d, {"contracts.csv": CONTRACTS.get(d, [])})
                                     for d in DAYS]).ok
    accounts = Accounts(root / "portal.sqlite")
    org = accounts.add_org("DR Haute-Normandie", "regional_service", "region_2005:23")
    _, one_time = accounts.add_user("analyste.rouen@example.org", "Analyste Rouen", org, "analyst")
    app = create_app(PortalSettings(root / "w.duckdb", root / "portal.sqlite", root / "cache"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started
    yield f"http://127.0.0.1:{port}", one_time, root
    uv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_regional_analyst_in_the_browser(server, browser, tmp_path):
    base, one_time, _ = server
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # login with the one-time password, then the forced change
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.fill("input[name=login]", "analyste.rouen@example.org")
    page.fill("input[name=password]", one_time)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/password")
    page.fill("input[name=current]", one_time)
    page.fill("input[name=new]", NEW_PASSWORD)
    page.fill("input[name=confirm]", NEW_PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")

    # the dashboard: this region's figures, charts drawn by plotly under the CSP
    assert "Haute-Normandie" in page.text_content(".portal-nav .scope")
    page.wait_for_selector(".portal-chart[data-drawn=yes]")
    assert page.locator(".portal-chart[data-drawn=yes]").count() >= 3
    assert page.locator(".portal-chart .main-svg").count() >= 3
    assert page.text_content('[data-indicator="entries"] .tile-value').strip() == "1"

    # the explorer: only the region's departments
    page.goto(base + "/explorer")
    page.check("input[name=measure][value=entries]")
    page.check("input[name=by][value=department]")
    page.fill("input[name=from]", "2006-03-13")
    page.click("form.explorer button[type=submit]")
    page.wait_for_selector("table.explorer-result")
    table = page.text_content("table.explorer-result")
    assert "Seine-Maritime" in table and "Eure" in table and "Calvados" not in table
    share = page.get_attribute("a.share", "href")
    assert "measure=entries" in share and "region" not in share  # the link carries no scope

    # an export, downloaded and opened
    with page.expect_download() as download:
        page.click("a.export-xlsx")
    path = tmp_path / "export.xlsx"
    download.value.save_as(path)
    cells = [c for row in load_workbook(path).active.iter_rows(values_only=True) for c in row]
    assert "Seine-Maritime" in cells and "Calvados" not in cells

    assert problems == [], problems  # no CSP violation, no script error

    # a forged request for another region: refused, nothing of it shown
    response = page.goto(base + "/summaries/2006-W10/25.xlsx")
    assert response.status == 404
    forged = context.request.get(base + "/explorer/export.csv?measure=entries&by=department&where=region_2005:25")
    assert forged.status == 200 and forged.text().strip() == "department;department_name;entries"
    context.close()
