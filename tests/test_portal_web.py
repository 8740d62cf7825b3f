"""The portal over HTTP (Starlette's TestClient drives the real application, warehouse and accounts store):
authentication, forced password change, scopes on every page, export, download and API call, CSRF,
throttling, expiry, roles, security headers.

The warehouse: week 2006-W11 with three contracts (hand-counted entries):

    C1  department 14 Calvados        region 25 Basse-Normandie   CAE  started 2006-03-13
    C2  department 50 Manche          region 25 Basse-Normandie   CIE  started 2006-03-14
    C3  department 76 Seine-Maritime  region 23 Haute-Normandie   CAE  started 2006-03-15
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from openpyxl import load_workbook
from starlette.testclient import TestClient

from dropkit import contract, load, write_drop
from pilotage.portal.accounts import Accounts
from pilotage.portal.app import PortalSettings, create_app

DAYS = ["2006-03-13", "2006-03-14", "2006-03-15", "2006-03-16", "2006-03-17"]
CONTRACTS = {
    "2006-03-13": [contract("C1", department="14", start="2006-03-13", measure="CAE")],
    "2006-03-14": [contract("C2", department="50", start="2006-03-14", measure="CIE", employer_type="ENTREPRISE",
                            rate="0.40")],
    "2006-03-15": [contract("C3", department="76", start="2006-03-15", measure="CAE")],
}
PASSWORD = "une phrase de passe assez longue"
PAGES = ["/", "/summaries", "/summaries/2006-W11/25.xlsx", "/explorer", "/explorer/export.csv?measure=entries",
         "/alerts", "/admin", "/admin/orgs", "/admin/loads", "/admin/rejects", "/admin/audit"]


class Clock:
    def __init__(self):
        self.now = 1_150_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("portal")
    assert load(root / "w.duckdb", *[write_drop(root / "drops", d, {"contracts.csv": CONTRACTS.get(d, [])})
                                     for d in DAYS]).ok
    return root / "w.duckdb"


@pytest.fixture
def portal(tmp_path, warehouse):
    """The application, an accounts store with a clock, and one user per scope and role."""
    clock = Clock()
    accounts = Accounts(tmp_path / "portal.sqlite", clock=clock)
    orgs = {"caen": accounts.add_org("DR Basse-Normandie", "regional_service", "region_2005:25"),
            "rouen": accounts.add_org("DR Haute-Normandie", "regional_service", "region_2005:23"),
            "manche": accounts.add_org("ALE Saint-Lô", "local_agency", "department:50"),
            "dg": accounts.add_org("DGEFP", "national_service", "national")}
    passwords = {}
    for login, org, role in (("analyste.caen@example.org", "caen", "analyst"),
                             ("analyste.rouen@example.org", "rouen", "analyst"),
                             ("lecteur.manche@example.org", "manche", "reader"),
                             ("admin.caen@example.org", "caen", "admin"),
                             ("admin@example.org", "dg", "admin")):
        user, one_time = accounts.add_user(login, login.split("@")[0], orgs[org], role)
        accounts.set_password(user.id, PASSWORD)
        passwords[login] = one_time
    app = create_app(PortalSettings(warehouse, tmp_path / "portal.sqlite", tmp_path / "cache"), accounts)
    return app, accounts, clock, passwords


def client(app) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(app, login_: str, password: str = PASSWORD) -> TestClient:
    c = client(app)
    token = csrf_of(c.get("/login").text)
    response = c.post("/login", data={"csrf": token, "login": login_, "password": password}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return c


def test_every_route_requires_authentication(portal):
    app, *_ = portal
    c = client(app)
    for path in PAGES:
        response = c.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    assert c.get("/api/indicators").status_code == 401
    assert c.post("/api/query", json={"measures": ["entries"]}).status_code == 401
    assert c.post("/logout", follow_redirects=False).status_code in (401, 303)
    # a bad bearer token is no identity either
    assert c.get("/api/indicators", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_first_login_forces_a_password_change(portal):
    app, accounts, _, _ = portal
    org = accounts.org("DR Basse-Normandie")
    _, one_time = accounts.add_user("nouveau@example.org", "Nouveau", org, "reader")
    c = client(app)
    token = csrf_of(c.get("/login").text)
    response = c.post("/login", data={"csrf": token, "login": "nouveau@example.org", "password": one_time},
                      follow_redirects=False)
    assert response.headers["location"] == "/password"
    for path in ("/", "/summaries", "/alerts"):
        assert c.get(path, follow_redirects=False).headers["location"] == "/password", path
    assert c.get("/api/indicators").status_code == 403
    page = c.get("/password").text
    weak = c.post("/password", data={"csrf": csrf_of(page), "current": one_time, "new": "court",
                                     "confirm": "court"})
    assert weak.status_code == 400
    done = c.post("/password", data={"csrf": csrf_of(page), "current": one_time, "new": PASSWORD,
                                     "confirm": PASSWORD}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert c.get("/").status_code == 200  # the same session goes on
    assert not accounts.user("nouveau@example.org").must_change


def test_wrong_password_and_throttling(portal):
    app, accounts, clock, _ = portal
    c = client(app)
    statuses = []
    for _ in range(8):
        token = csrf_of(c.get("/login").text)
        statuses.append(c.post("/login", data={"csrf": token, "login": "analyste.caen@example.org",
                                               "password": "mauvais mot de passe"}).status_code)
    assert statuses[0] == 401 and statuses[-1] == 429
    # throttled: even the right password is refused, and says only "too many attempts"
    token = csrf_of(c.get("/login").text)
    refused = c.post("/login", data={"csrf": token, "login": "analyste.caen@example.org", "password": PASSWORD})
    assert refused.status_code == 429 and "Trop de tentatives" in refused.text
    clock.now += 24 * 3600
    assert login(app, "analyste.caen@example.org")
    events = [e["event"] for e in accounts.audit_log(50, login="analyste.caen@example.org")]
    assert "login" in events and "login_failed" in events


def test_login_form_needs_its_csrf_token(portal):
    app, *_ = portal
    c = client(app)
    c.get("/login")
    response = c.post("/login", data={"csrf": "forged", "login": "analyste.caen@example.org",
                                      "password": PASSWORD})
    assert response.status_code == 403


def test_state_changing_requests_need_the_session_csrf_token(portal):
    app, *_ = portal
    c = login(app, "admin@example.org")
    assert c.post("/logout", follow_redirects=False).status_code == 403
    assert c.post("/admin/users/disable", data={"login": "analyste.caen@example.org"}).status_code == 403
    assert c.post("/api/query", json={"measures": ["entries"]}).status_code == 403
    assert c.get("/").status_code == 200  # still logged in
    token = csrf_of(c.get("/").text)
    assert c.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert c.get("/", follow_redirects=False).status_code == 303


def test_sessions_expire(portal):
    app, _, clock, _ = portal
    c = login(app, "analyste.caen@example.org")
    assert c.get("/").status_code == 200
    clock.now += 9 * 3600  # sessions last 8 hours
    response = c.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_cookies_and_security_headers(portal):
    app, *_ = portal
    c = client(app)
    token = csrf_of(c.get("/login").text)
    response = c.post("/login", data={"csrf": token, "login": "analyste.caen@example.org", "password": PASSWORD},
                      follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "pilotage_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain HTTP in the tests
    page = c.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # no inline script in the page: only external scripts and JSON data blocks
    for attributes in re.findall(r"<script([^>]*)>", page.text):
        assert "src=" in attributes or 'type="application/json"' in attributes, attributes


def test_secure_cookie_under_https(tmp_path, warehouse):
    accounts = Accounts(tmp_path / "portal.sqlite")
    org = accounts.add_org("DGEFP", "national_service", "national")
    user, _ = accounts.add_user("dg@example.org", "DG", org, "reader")
    accounts.set_password(user.id, PASSWORD)
    app = create_app(PortalSettings(warehouse, tmp_path / "portal.sqlite", tmp_path / "cache", https=True), accounts)
    c = TestClient(app, base_url="https://testserver")
    token = csrf_of(c.get("/login").text)
    response = c.post("/login", data={"csrf": token, "login": "dg@example.org", "password": PASSWORD},
                      follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]
    assert "max-age" in c.get("/").headers["strict-transport-security"]


def numbers(csv_text: str) -> dict[str, int]:
    lines = csv_text.strip().splitlines()
    header = lines[0].split(";")
    return {row.split(";")[header.index("department")]: int(row.split(";")[header.index("entries")])
            for row in lines[1:]}


def test_each_user_sees_only_its_scope_even_through_a_shared_link(portal):
    app, accounts, *_ = portal
    caen, rouen = login(app, "analyste.caen@example.org"), login(app, "analyste.rouen@example.org")
    link = "/explorer/export.csv?measure=entries&by=department&from=2006-03-13&to=2006-03-19"
    assert numbers(caen.get(link).text) == {"14": 1, "50": 1, "61": 0}
    assert numbers(rouen.get(link).text) == {"27": 0, "76": 1}  # the same link, the viewer's own scope
    # asking for another region explicitly: an empty answer, never its figures
    forged = rouen.get(link + "&where=region_2005:25")
    assert numbers(forged.text) == {}
    api = rouen.post("/api/query", json={"measures": ["entries"], "by": ["region_2005"],
                                         "where": {"region_2005": ["25"]}},
                     headers={"X-CSRF-Token": csrf_of(rouen.get("/").text)})
    assert api.status_code == 200 and api.json()["rows"] == [] and api.json()["scope"] == "region_2005:23"
    # the explorer page and the Excel export
    page = caen.get("/explorer?measure=entries&by=department&from=2006-03-13&to=2006-03-19").text
    assert "Calvados" in page and "Seine-Maritime" not in page
    book = load_workbook(io.BytesIO(caen.get(link.replace("export.csv", "export.xlsx")).content))
    cells = [c for row in book.active.iter_rows(values_only=True) for c in row]
    assert "Calvados" in cells and "Seine-Maritime" not in cells
    events = [e["event"] for e in accounts.audit_log(100, login="analyste.caen@example.org")]
    assert "export" in events and "query" in events


def test_dashboard_and_summaries_in_scope(portal):
    app, *_ = portal
    rouen = login(app, "analyste.rouen@example.org")
    dashboard = rouen.get("/")
    assert dashboard.status_code == 200 and "Haute-Normandie" in dashboard.text
    entries = re.search(r'data-indicator="entries".*?<data value="([^"]+)"', dashboard.text, re.S).group(1)
    assert entries == "1"  # C3 only (the week of 13 March, as of the 17th)
    listing = rouen.get("/summaries").text
    assert "/summaries/2006-W10/23.xlsx" in listing and "/25." not in listing
    # another region's summary does not exist for this user, whatever the URL
    assert rouen.get("/summaries/2006-W10/25.xlsx").status_code == 404
    assert rouen.get("/summaries/2006-W10/23.xlsx").status_code == 200
    workbook = load_workbook(io.BytesIO(rouen.get("/summaries/2006-W10/23.xlsx").content))
    assert workbook.sheetnames
    assert rouen.get("/summaries/2006-W10/..%2F..%2Fetc.xlsx").status_code == 404


def test_roles(portal):
    app, *_ = portal
    reader = login(app, "lecteur.manche@example.org")
    assert reader.get("/").status_code == 200
    assert reader.get("/explorer").status_code == 403
    assert reader.get("/explorer/export.csv?measure=entries").status_code == 403
    assert reader.post("/api/query", json={"measures": ["entries"]},
                       headers={"X-CSRF-Token": csrf_of(reader.get("/").text)}).status_code == 403
    assert reader.get("/admin").status_code == 403
    assert reader.get("/api/indicators").status_code == 200
    analyst = login(app, "analyste.caen@example.org")
    assert analyst.get("/explorer").status_code == 200 and analyst.get("/admin").status_code == 403


def test_admin_sees_and_acts_within_its_scope(portal):
    app, accounts, *_ = portal
    regional = login(app, "admin.caen@example.org")
    users = regional.get("/admin").text
    assert "analyste.caen@example.org" in users and "lecteur.manche@example.org" in users
    assert "analyste.rouen@example.org" not in users and "admin@example.org<" not in users
    token = csrf_of(users)
    assert regional.post("/admin/users/disable", data={"csrf": token, "login": "analyste.rouen@example.org"})\
        .status_code == 403
    assert not accounts.user("analyste.rouen@example.org").disabled
    assert regional.post("/admin/users/disable", data={"csrf": token, "login": "lecteur.manche@example.org"})\
        .status_code == 200
    assert accounts.user("lecteur.manche@example.org").disabled
    national = login(app, "admin@example.org")
    assert "analyste.rouen@example.org" in national.get("/admin").text
    assert "2006-03-17" in national.get("/admin/loads").text


def test_api_token_for_tools(portal):
    app, accounts, *_ = portal
    token = accounts.create_token("analyste.caen@example.org", "script")
    c = client(app)
    headers = {"Authorization": f"Bearer {token}"}
    assert len(c.get("/api/indicators", headers=headers).json()) > 5
    answer = c.post("/api/query", json={"measures": ["entries"], "by": ["department"], "start": "2006-03-13"},
                    headers=headers)  # no CSRF token needed: no cookie
    assert answer.status_code == 200
    assert {r["department"]: r["entries"] for r in answer.json()["rows"]} == {"14": 1, "50": 1, "61": 0}
    bad = c.post("/api/query", json={"measures": ["nope"]}, headers=headers)
    assert bad.status_code == 400 and "nope" in bad.json()["error"]


def test_a_new_drop_shows_once_it_has_landed(portal, warehouse, tmp_path):
    app, *_ = portal
    c = login(app, "analyste.caen@example.org")
    assert 'datetime="2006-03-17"' in c.get("/").text
    # the daily load of Monday 20 March lands while the portal runs (a copy of the warehouse: shared fixture)
    import shutil

    from dropkit import warehouse as open_warehouse

    moved = tmp_path / "live.duckdb"
    shutil.copyfile(warehouse, moved)
    live_app = create_app(PortalSettings(moved, tmp_path / "portal.sqlite", tmp_path / "cache-live"), portal[1])
    live = login(live_app, "analyste.caen@example.org")
    assert 'datetime="2006-03-17"' in live.get("/").text
    drop = write_drop(tmp_path / "drops", "2006-03-20", {"contracts.csv": [contract("C9", department="14",
                                                                                 start="2006-03-20")]})
    assert load(moved, drop).ok and open_warehouse(moved).path == moved
    explorer = live.get("/explorer/export.csv?measure=entries&by=department&from=2006-03-20&to=2006-03-20")
    assert numbers(explorer.text)["14"] == 1  # queries answer from the new state at once
    # the dashboard is rebuilt aside (the previous one, dated, is shown meanwhile), then the new date shows
    import time

    for _ in range(100):
        if 'class="as-of-date" datetime="2006-03-20"' in live.get("/").text:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the new data date never showed on the dashboard")
