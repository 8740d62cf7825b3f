"""The portal's accounts: organisations, users, one-time passwords, throttling, sessions, tokens, audit."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest
from argon2 import PasswordHasher

from pilotage.cubes import Scope
from pilotage.portal.accounts import (ACCOUNT_DELAY, ADDRESS_FAILURES, ADDRESS_WINDOW, ONE_TIME_DAYS, ROLES,
                                      Accounts, AccountsError, LoginRefused, Org, User, one_time_password)

PASSWORD = "une phrase de passe assez longue"


class Clock:
    def __init__(self, now: float = 1_150_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(tmp_path, clock):
    # cheap argon2 parameters: the tests verify many passwords
    return Accounts(tmp_path / "portal.sqlite", clock=clock,
                    hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def caen(accounts):
    return accounts.add_org("DR Basse-Normandie", "regional_service", "region_2005:25")


def _active(accounts, login="jean.dupont@example.org", org="DR Basse-Normandie", role="analyst",
            password=PASSWORD) -> User:
    """A user who has chosen their password."""
    user, _ = accounts.add_user(login, "Jean Dupont", org, role)
    accounts.set_password(user.id, password)
    return accounts.user(login)


def _refused(accounts, login, password, address="10.0.0.1") -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        accounts.authenticate(login, password, address)
    return caught.value


# -- organisations ---------------------------------------------------------------------------------

def test_add_org_and_look_it_up(accounts):
    org = accounts.add_org("  Agence  locale de Caen ", "local agency", "department:Calvados")
    assert org == Org(org.id, "Agence locale de Caen", "local_agency", Scope.of("department", "14"))
    assert accounts.org("agence locale de CAEN") == org
    assert accounts.org(org.id) == accounts.org(str(org.id)) == org
    assert accounts.add_org("Préfecture de région Normandie", "regional_service", "region_2016:Normandie").scope \
        == Scope.of("region_2016", "28")
    assert accounts.org("prefecture de region normandie").name == "Préfecture de région Normandie"
    national = accounts.add_org("DGEFP", "national_service", "national")
    assert national.scope.is_national
    assert [o.name for o in accounts.orgs()] == ["Agence locale de Caen", "DGEFP", "Préfecture de région Normandie"]


@pytest.mark.parametrize("name, type_, scope, message", [
    ("X", "ministry", "national", "unknown organisation type 'ministry'; valid: local_agency, payment_office"),
    ("X", "local_agency", "region_2005:99", "unknown region '99' in region_2005"),
    ("X", "local_agency", "region:25", "say which regions"),
    ("X", "local_agency", "", "missing scope"),
    ("", "local_agency", "national", "missing organisation name"),
])
def test_add_org_refuses_bad_input(accounts, name, type_, scope, message):
    with pytest.raises(AccountsError, match=message):
        accounts.add_org(name, type_, scope)


def test_org_names_are_unique(accounts, caen):
    with pytest.raises(AccountsError, match="already exists"):
        accounts.add_org("dr basse-normandie", "local_agency", "national")
    with pytest.raises(AccountsError, match="unknown organisation 'nowhere'"):
        accounts.org("nowhere")


def test_import_orgs(accounts, tmp_path):
    path = tmp_path / "orgs.csv"
    path.write_text("name;type;scope\n# comment\nDR Basse-Normandie;regional_service;region_2005:25\n"
                    "\"Agence de Caen; centre\";local_agency;department:14,50\n"
                    "DR Normandie;regional_service;region_2016:Normandie\n", encoding="utf-8")
    assert accounts.import_orgs(path) == 3
    assert accounts.org("agence de caen; centre").scope == Scope.of("department", "14", "50")
    assert accounts.org("DR Normandie").scope == Scope.of("region_2016", "28")
    with pytest.raises(AccountsError, match=r"orgs.csv, line 3: organisation 'DR Basse-Normandie' already exists"):
        accounts.import_orgs(path)
    assert accounts.import_orgs(path, skip_existing=True) == 0


def test_import_orgs_is_all_or_nothing(accounts, tmp_path):
    path = tmp_path / "orgs.csv"
    lines = ["nom;type;périmètre"] + [f"Agence {i};local_agency;department:14" for i in range(1000)]
    lines[500] = "Agence 499b;local_agency;department:Atlantide"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AccountsError) as caught:
        accounts.import_orgs(path)
    assert str(caught.value).startswith(f"{path}, line 501: scope: unknown department 'Atlantide'")
    assert caught.value.line == 501
    assert accounts.orgs() == []
    lines[500] = "agence   1;local_agency;department:14"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AccountsError, match="line 501: organisation 'agence 1' is already listed \\(line 3\\)"):
        accounts.import_orgs(path)
    lines[500] = "Agence 499b;local_agency;department:14"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert accounts.import_orgs(path) == 1000


@pytest.mark.parametrize("text, message", [
    ("name;type\nX;local_agency\n", "line 1: header 'name;type': expected name;type;scope"),
    ("X;local_agency\n", "line 1: expected 3 columns name;type;scope separated by ';', found 2"),
    ("name;type;scope\n", "no organisation"),
])
def test_import_orgs_bad_files(accounts, tmp_path, text, message):
    path = tmp_path / "orgs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AccountsError, match=message):
        accounts.import_orgs(path)


def test_import_orgs_not_utf8_or_missing(accounts, tmp_path):
    path = tmp_path / "orgs.csv"
    path.write_bytes("name;type;scope\nPréfecture;regional_service;national\n".encode("cp1252"))
    with pytest.raises(AccountsError, match="line 2: not UTF-8"):
        accounts.import_orgs(path)
    with pytest.raises(AccountsError, match="nowhere.csv: file not found"):
        accounts.import_orgs(tmp_path / "nowhere.csv")


# -- users -----------------------------------------------------------------------------------------

def test_add_user_gives_a_one_time_password_that_forces_a_change(accounts, caen, clock):
    user, password = accounts.add_user("Jean.Dupont@Example.ORG", "Jean Dupont", "dr basse-normandie", "analyst")
    assert user.login == "jean.dupont@example.org" and user.org == caen and user.scope == caen.scope
    assert user.must_change and not user.disabled
    assert len(password) == 19 and password.count("-") == 3
    # typed in capitals, without the dashes, with an O for a 0
    typed = password.upper().replace("-", "").replace("0", "O")
    logged = accounts.authenticate("JEAN.DUPONT@example.org", typed, "10.0.0.1")
    assert logged.id == user.id and logged.must_change
    with pytest.raises(AccountsError, match="too short: at least 12 characters"):
        accounts.set_password(user.id, "court")
    with pytest.raises(AccountsError, match="must not be the login"):
        accounts.set_password(user.id, "Jean.Dupont@example.org")
    with pytest.raises(AccountsError, match="must differ from the current one"):
        accounts.set_password(user.id, password)
    accounts.set_password(user.id, PASSWORD)
    assert not accounts.user(user.login).must_change
    with sqlite3.connect(accounts.path) as db:
        assert db.execute("SELECT password FROM users").fetchone()[0].startswith("$argon2id$")
    assert _refused(accounts, user.login, password).reason == "bad credentials"
    assert accounts.authenticate(user.login, PASSWORD, "10.0.0.1").must_change is False
    with pytest.raises(AccountsError, match="must differ from the current one"):
        accounts.set_password(user.id, PASSWORD)


def test_one_time_passwords_expire(accounts, caen, clock):
    user, password = accounts.add_user("a@example.org", "A", caen, "reader")
    clock.advance(ONE_TIME_DAYS * 86400 + 1)
    assert _refused(accounts, user.login, password).reason == "expired"
    assert _refused(accounts, user.login, "wrong").reason == "bad credentials"


def test_one_time_passwords_are_random():
    passwords = {one_time_password() for _ in range(1000)}
    assert len(passwords) == 1000
    assert not any(c in "".join(passwords) for c in "ilou")


@pytest.mark.parametrize("login, role, message", [
    ("not-an-email", "reader", "'not-an-email' is not an email address"),
    ("", "reader", "missing login"),
    ("a@example.org", "superuser", "unknown role 'superuser'; valid: reader, analyst, admin"),
])
def test_add_user_refuses_bad_input(accounts, caen, login, role, message):
    with pytest.raises(AccountsError, match=message):
        accounts.add_user(login, "X", caen, role)


def test_add_user_refuses_duplicates_and_unknown_orgs(accounts, caen):
    accounts.add_user("a@example.org", "A", caen, "reader")
    with pytest.raises(AccountsError, match="user a@example.org already exists"):
        accounts.add_user("A@example.org", "A", caen, "reader")
    with pytest.raises(AccountsError, match="unknown organisation 'nowhere'"):
        accounts.add_user("b@example.org", "B", "nowhere", "reader")
    with pytest.raises(AccountsError, match="unknown user 'b@example.org'"):
        accounts.user("b@example.org")


def test_roles_are_ordered(accounts, caen):
    reader, _ = accounts.add_user("r@example.org", "R", caen, "reader")
    admin, _ = accounts.add_user("a@example.org", "A", caen, "Admin")
    assert [reader.can(r) for r in ROLES] == [True, False, False]
    assert [admin.can(r) for r in ROLES] == [True, True, True]
    with pytest.raises(ValueError):
        reader.can("root")


def _users_csv(path, count, orgs=("DR Basse-Normandie", "Agence de Caen")):
    lines = ["login;name;org;role"]
    lines += [f"user{i}@example.org;Utilisateur {i};{orgs[i % len(orgs)]};{ROLES[i % 3]}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def test_import_2000_users_quickly(accounts, caen, tmp_path):
    agency = accounts.add_org("Agence de Caen", "local_agency", "department:14")
    path = tmp_path / "users.csv"
    _users_csv(path, 2000)
    started = time.perf_counter()
    passwords = accounts.import_users(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"importing 2,000 users took {elapsed:.2f} s"
    assert len(passwords) == 2000 and len({p for _, p in passwords}) == 2000
    assert passwords[0][0] == "user0@example.org"
    assert len(accounts.users()) == 2000
    assert len(accounts.users(agency)) == 1000 and len(accounts.users("dr basse-normandie")) == 1000
    user = accounts.user("user7@example.org")
    assert user.org == agency and user.role == "analyst" and user.must_change
    login, password = passwords[1999]
    assert accounts.authenticate(login, password, "10.0.0.1").login == login
    assert accounts.user_counts() == {caen.id: 1000, agency.id: 1000}
    assert len(accounts.audit_log(limit=None, event="user_added")) == 2000


@pytest.mark.parametrize("bad, message", [
    ("user_x@example.org;X;Nowhere;reader", "unknown organisation 'Nowhere'"),
    ("user_x@example.org;X;DR Basse-Normandie;boss", "unknown role 'boss'"),
    ("user_x;X;DR Basse-Normandie;reader", "'user_x' is not an email address"),
    ("USER3@example.org;X;DR Basse-Normandie;reader", r"user user3@example.org is already listed \(line 5\)"),
    ("user_x@example.org;X;DR Basse-Normandie", "expected 4 columns login;name;org;role"),
])
def test_import_users_error_names_the_line_and_imports_nothing(accounts, caen, tmp_path, bad, message):
    accounts.add_org("Agence de Caen", "local_agency", "department:14")
    path = tmp_path / "users.csv"
    lines = _users_csv(path, 2000)
    lines[1500] = bad  # line 1501 of the file
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AccountsError, match=f"users.csv, line 1501: {message}"):
        accounts.import_users(path)
    assert accounts.users() == []


def test_import_users_existing(accounts, caen, tmp_path):
    accounts.add_user("user0@example.org", "U", caen, "reader")
    accounts.add_user("user1@example.org", "U", caen, "admin")
    path = tmp_path / "users.csv"
    path.write_text("email,name,organisation,role\nuser0@example.org,U,DR Basse-Normandie,reader\n"
                    "user2@example.org,\"Dupont, Jean\",%d,reader\n" % caen.id, encoding="utf-8")
    with pytest.raises(AccountsError, match="line 2: user user0@example.org already exists"):
        accounts.import_users(path)
    assert [login for login, _ in accounts.import_users(path, skip_existing=True)] == ["user2@example.org"]
    assert accounts.user("user2@example.org").name == "Dupont, Jean"
    path.write_text("login;name;org;role\nuser1@example.org;U;DR Basse-Normandie;reader\n", encoding="utf-8")
    with pytest.raises(AccountsError, match="already exists with another organisation or role"):
        accounts.import_users(path, skip_existing=True)


# -- disable, reset --------------------------------------------------------------------------------

def test_disable_closes_sessions_revokes_tokens_and_refuses_login(accounts, caen):
    user = _active(accounts)
    session = accounts.open_session(user, "10.0.0.1")
    token = accounts.create_token(user.login, "script")
    assert accounts.session(session.token) and accounts.token_user(token)
    accounts.disable_user("Jean.Dupont@example.org", by="admin@example.org")
    assert accounts.user(user.login).disabled
    assert accounts.session(session.token) is None
    assert accounts.token_user(token) is None
    assert _refused(accounts, user.login, PASSWORD).reason == "disabled"
    assert _refused(accounts, user.login, "wrong password!").reason == "bad credentials"
    with pytest.raises(AccountsError, match="disabled"):
        accounts.open_session(user, "10.0.0.1")
    with pytest.raises(AccountsError, match="disabled"):
        accounts.create_token(user.login, "another")
    assert accounts.audit_log(1, event="user_disabled")[0]["detail"] == {"by": "admin@example.org"}
    accounts.enable_user(user.login)
    assert accounts.authenticate(user.login, PASSWORD, "10.0.0.1").login == user.login
    assert accounts.token_user(token) is None  # revoked for good
    with pytest.raises(AccountsError, match="unknown user"):
        accounts.disable_user("nobody@example.org")


def test_reset_password(accounts, caen):
    user = _active(accounts)
    session = accounts.open_session(user, "10.0.0.1")
    password = accounts.reset_password(user.login)
    assert accounts.user(user.login).must_change
    assert accounts.session(session.token) is None
    assert _refused(accounts, user.login, PASSWORD).reason == "bad credentials"
    assert accounts.authenticate(user.login, password, "10.0.0.1").must_change


def test_new_password_closes_the_other_sessions(accounts, caen):
    user = _active(accounts)
    mine, other = accounts.open_session(user, "10.0.0.1"), accounts.open_session(user, "10.0.0.2")
    accounts.set_password(user.id, "un autre mot de passe", keep_session=mine.token)
    assert accounts.session(mine.token) is not None
    assert accounts.session(other.token) is None


# -- throttling ------------------------------------------------------------------------------------

def test_throttling_per_account(accounts, caen, clock):
    user = _active(accounts)
    for _ in range(5):
        assert _refused(accounts, user.login, "wrong password").reason == "bad credentials"
        clock.advance(10)
    # the right password, from another address: refused, without saying it was right
    refused = _refused(accounts, user.login, PASSWORD, "10.0.0.2")
    assert refused.reason == "throttled" and 0 < refused.retry_after <= ACCOUNT_DELAY
    clock.advance(refused.retry_after + 0.1)
    # a further failure doubles the delay
    assert _refused(accounts, user.login, "wrong password").reason == "bad credentials"
    refused = _refused(accounts, user.login, PASSWORD)
    assert refused.reason == "throttled" and refused.retry_after == pytest.approx(2 * ACCOUNT_DELAY)
    clock.advance(2 * ACCOUNT_DELAY)
    assert accounts.authenticate(user.login, PASSWORD, "10.0.0.1").login == user.login
    # a success resets the count
    for _ in range(4):
        _refused(accounts, user.login, "wrong password")
    assert accounts.authenticate(user.login, PASSWORD, "10.0.0.1")
    detail = [e["detail"] for e in accounts.audit_log(limit=None, login=user.login, event="login_failed")]
    assert detail.count("throttled") == 2 and detail.count("wrong password") == 10


def test_throttling_forgets_old_failures(accounts, caen, clock):
    user = _active(accounts)
    for _ in range(4):
        _refused(accounts, user.login, "wrong password")
    clock.advance(16 * 60)
    _refused(accounts, user.login, "wrong password")  # a fifth failure, but not in a row
    assert accounts.authenticate(user.login, PASSWORD, "10.0.0.1")


def test_unknown_logins_are_throttled_alike(accounts, caen):
    for _ in range(5):
        assert _refused(accounts, "nobody@example.org", "guess").reason == "bad credentials"
    assert _refused(accounts, "NOBODY@example.org", "guess").reason == "throttled"
    assert accounts.audit_log(1)[0]["detail"] == "throttled"


def test_throttling_per_address(accounts, caen, clock):
    user = _active(accounts)
    for i in range(ADDRESS_FAILURES):
        assert _refused(accounts, f"guess{i}@example.org", "guess", "192.0.2.7").reason == "bad credentials"
        clock.advance(1)
    refused = _refused(accounts, user.login, PASSWORD, "192.0.2.7")
    assert refused.reason == "throttled"
    assert refused.retry_after == pytest.approx(ADDRESS_WINDOW - ADDRESS_FAILURES)
    # another address is not throttled; nor this one once the oldest failure is 10 minutes old
    assert accounts.authenticate(user.login, PASSWORD, "192.0.2.8")
    clock.advance(refused.retry_after + 0.1)
    assert accounts.authenticate(user.login, PASSWORD, "192.0.2.7")


def test_ipv6_addresses_are_throttled_by_their_64(accounts, caen):
    for i in range(ADDRESS_FAILURES):
        _refused(accounts, f"guess{i}@example.org", "guess", f"2001:db8::{i + 1:x}")
    assert _refused(accounts, "x@example.org", "guess", "2001:db8::ffff:1").reason == "throttled"
    assert _refused(accounts, "x@example.org", "guess", "2001:db8:0:1::1").reason == "bad credentials"


def test_parallel_attempts_cannot_pass_the_limit(tmp_path, clock):
    accounts = Accounts(tmp_path / "portal.sqlite", clock=clock,
                        hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    reasons = []

    def attempt():
        try:
            accounts.authenticate("target@example.org", "guess", "10.0.0.1")
        except LoginRefused as exc:
            reasons.append(exc.reason)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(reasons) == ["bad credentials"] * 5 + ["throttled"] * 7


# -- sessions, tokens --------------------------------------------------------------------------------

def test_session_expiry(accounts, caen, clock):
    user = _active(accounts)
    session = accounts.open_session(user, "10.0.0.1", hours=1)
    assert (session.expires - session.created).total_seconds() == 3600
    found = accounts.session(session.token)
    assert found.user == user and found.csrf == session.csrf and found.expires == session.expires
    assert accounts.session("forged") is None and accounts.session(None) is None
    clock.advance(3599)
    assert accounts.session(session.token) is not None
    clock.advance(1)
    assert accounts.session(session.token) is None
    with sqlite3.connect(accounts.path) as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_session_idle_expiry(tmp_path, clock):
    accounts = Accounts(tmp_path / "portal.sqlite", clock=clock, idle_minutes=30,
                        hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    accounts.add_org("DR Basse-Normandie", "regional_service", "region_2005:25")
    session = accounts.open_session(_active(accounts), "10.0.0.1")
    for _ in range(4):  # kept alive by use
        clock.advance(25 * 60)
        assert accounts.session(session.token) is not None
    clock.advance(31 * 60)
    assert accounts.session(session.token) is None


def test_close_session(accounts, caen):
    user = _active(accounts)
    session = accounts.open_session(user, "10.0.0.1")
    accounts.close_session(session.token, "10.0.0.1")
    assert accounts.session(session.token) is None
    assert accounts.audit_log(1)[0] | {"at": None, "id": None} == {
        "id": None, "at": None, "event": "logout", "login": user.login, "address": "10.0.0.1", "detail": None}
    accounts.close_session(session.token)  # again: nothing
    with sqlite3.connect(accounts.path) as db:
        stored = db.execute("SELECT token_hash FROM sessions").fetchall()
    assert all(session.token not in row[0] for row in stored)


def test_api_tokens(accounts, caen, clock):
    user = _active(accounts)
    token = accounts.create_token(user.login, "tableau de bord")
    assert accounts.token_user(token) == user
    assert accounts.token_user(token + "x") is None and accounts.token_user("") is None
    with sqlite3.connect(accounts.path) as db:
        assert token not in str(db.execute("SELECT * FROM tokens").fetchall())
    (listed,) = accounts.tokens(user.login)
    assert listed["label"] == "tableau de bord" and listed["revoked"] is None and listed["last_used"] is not None
    accounts.revoke_token(user.login, listed["id"])
    assert accounts.token_user(token) is None
    short = accounts.create_token(user.login, "court", days=1)
    clock.advance(86400)
    assert accounts.token_user(short) is None
    with pytest.raises(AccountsError, match="label"):
        accounts.create_token(user.login, "")


# -- audit -----------------------------------------------------------------------------------------

def test_audit_log_of_logins(accounts, caen, clock):
    user = _active(accounts)
    _refused(accounts, user.login, "wrong password", "10.0.0.9")
    clock.advance(1)
    accounts.authenticate(user.login, PASSWORD, "10.0.0.9")
    accounts.audit("query", user.login, "10.0.0.9", {"measures": ["entries"], "by": ["region_2005"]})
    log = accounts.audit_log(3)
    assert [(e["event"], e["login"], e["address"]) for e in log] == [
        ("query", user.login, "10.0.0.9"), ("login", user.login, "10.0.0.9"),
        ("login_failed", user.login, "10.0.0.9")]
    assert log[0]["detail"] == {"measures": ["entries"], "by": ["region_2005"]}
    assert log[2]["detail"] == "wrong password"
    assert log[0]["at"] > log[2]["at"]
    assert [e["event"] for e in accounts.audit_log(login="JEAN.DUPONT@example.org", event="login")] == ["login"]
    assert accounts.audit_log(since=log[1]["at"])[-1]["event"] == "login"
    with pytest.raises(AccountsError, match="not an event name"):
        accounts.audit("Drop Table")


def test_purge(accounts, caen, clock):
    user = _active(accounts)
    accounts.open_session(user, "10.0.0.1", hours=1)
    kept = accounts.open_session(user, "10.0.0.1", hours=48)
    _refused(accounts, "nobody@example.org", "guess")
    clock.advance(2 * 86400 - 60)
    accounts.audit("query", user.login)
    assert accounts.purge() == {"sessions": 1, "failures": 1, "lockouts": 1}
    assert accounts.session(kept.token) is not None
    assert accounts.purge(audit_days=1)["audit"] > 0
    assert [e["event"] for e in accounts.audit_log()] == ["query"]


# -- the file --------------------------------------------------------------------------------------

def test_the_file(tmp_path, accounts):
    assert stat.S_IMODE(os.stat(accounts.path).st_mode) == 0o600
    with sqlite3.connect(accounts.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(AccountsError, match="newer than this pilotage"):
        Accounts(accounts.path)


def test_threads_share_an_accounts_object(accounts, caen):
    user = _active(accounts)
    sessions = [accounts.open_session(user, "10.0.0.1") for _ in range(8)]
    found, errors = [], []

    def work(session):
        try:
            for _ in range(50):
                found.append(accounts.session(session.token).user.id)
                accounts.audit("query", user.login, "10.0.0.1")
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and found == [user.id] * 400
    assert len(accounts.audit_log(limit=None, event="query")) == 400


# -- what the command line shows -------------------------------------------------------------------

def test_admin_cli_tables_and_passwords_file(accounts, caen, tmp_path, clock):
    from datetime import datetime, timezone

    from pilotage.portal.admin_cli import (format_audit, format_orgs, format_users, import_users_with_passwords,
                                           parse_since, user_rows)

    _active(accounts)
    path = tmp_path / "users.csv"
    _users_csv(path, 20, orgs=("DR Basse-Normandie",))
    passwords = tmp_path / "passwords.csv"
    assert import_users_with_passwords(accounts, path, passwords, by="cli:test") == 20
    assert stat.S_IMODE(os.stat(passwords).st_mode) == 0o600
    lines = passwords.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "login;one_time_password" and len(lines) == 21
    login, password = lines[5].split(";")
    assert accounts.authenticate(login, password, "10.0.0.1").login == login
    # an existing passwords file is never overwritten; a failed import leaves no file
    with pytest.raises(AccountsError, match="already exists"):
        import_users_with_passwords(accounts, path, passwords)
    with pytest.raises(AccountsError, match="line 2: user user0@example.org already exists"):
        import_users_with_passwords(accounts, path, tmp_path / "again.csv")
    assert not (tmp_path / "again.csv").exists()
    accounts.disable_user("user1@example.org")
    table = format_users(accounts.users())
    assert "21 user(s)" in table and "disabled" in table and "one-time password" in table
    assert {r["state"] for r in user_rows(accounts.users())} == {"active", "disabled", "one-time password"}
    assert "DR Basse-Normandie  regional_service  region_2005:25  21" in format_orgs(accounts.orgs(),
                                                                                   accounts.user_counts())
    assert format_users([]) == "no user" and format_orgs([]) == "no organisation"
    assert "user_disabled  user1@example.org" in format_audit(accounts.audit_log(1))
    added = accounts.audit_log(1, login="user19@example.org", event="user_added")
    assert '{"by":"cli:test","org":"DR Basse-Normandie"' in format_audit(added)
    now = datetime(2006, 3, 14, 12, tzinfo=timezone.utc)
    assert parse_since("12h", now) == datetime(2006, 3, 14, tzinfo=timezone.utc)
    assert parse_since("2006-03-01") == datetime(2006, 3, 1, tzinfo=timezone.utc)
    assert parse_since(None) is None
    with pytest.raises(AccountsError, match="--since 'hier'"):
        parse_since("hier")


# -- the commands (pilotage orgs|users|audit), once the command line has them ----------------------

_CONFIG = """
[paths]
warehouse = "w.duckdb"
drops = "drops"
output = "out"
recipients = "recipients.csv"

[smtp]
host = "smtp.example.org"
security = "ssl"
user = "pilotage"
password_env = "PILOTAGE_SMTP_PASSWORD"

[mail]
sender = "Pilotage <pilotage@example.org>"
"""


def test_commands(tmp_path, monkeypatch):
    from pilotage.cli import main

    if "users" not in main.commands:
        pytest.skip("pilotage users|orgs|audit are not in the command line yet")
    check_commands(main, tmp_path, monkeypatch)


def check_commands(main, tmp_path, monkeypatch):
    from click.testing import CliRunner

    (tmp_path / "pilotage.toml").write_text(_CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def run(*args):
        result = CliRunner().invoke(main, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    result = run("orgs", "add", "DR Basse-Normandie", "--type", "regional_service", "--scope", "region_2005:25")
    assert result.exit_code == 0 and "region_2005:25" in result.output
    result = run("orgs", "add", "X", "--type", "ministry", "--scope", "national")
    assert result.exit_code == 2 and "unknown organisation type 'ministry'" in result.output
    (tmp_path / "orgs.csv").write_text("name;type;scope\nAgence de Caen;local_agency;department:Calvados\n"
                                       "DGEFP;national_service;national\n", encoding="utf-8")
    result = run("orgs", "import", "orgs.csv")
    assert result.exit_code == 0 and "2 organisation(s) added" in result.output
    assert "department:14" in run("orgs", "list").output
    assert run("orgs", "list", "--format", "csv").output.startswith("id;name;type;scope;users\n")
    result = run("users", "add", "Jean.Dupont@example.org", "--name", "Jean Dupont", "--org", "dr basse-normandie",
                 "--role", "analyst")
    assert result.exit_code == 0 and "one-time password: " in result.output
    _users_csv(tmp_path / "users.csv", 50, orgs=("Agence de Caen",))
    result = run("users", "import", "users.csv", "-o", "passwords.csv")
    assert result.exit_code == 0 and "50 user(s) added" in result.output
    assert stat.S_IMODE(os.stat(tmp_path / "passwords.csv").st_mode) == 0o600
    result = run("users", "import", "users.csv", "-o", "passwords.csv")
    assert result.exit_code == 2 and "passwords.csv: already exists" in result.output
    result = run("users", "import", "users.csv", "-o", "again.csv")
    assert result.exit_code == 2 and "users.csv, line 2: user user0@example.org already exists" in result.output
    assert not (tmp_path / "again.csv").exists()
    assert "50 user(s)" in run("users", "list", "--org", "Agence de Caen").output
    assert '"login": "jean.dupont@example.org"' in run("users", "list", "--format", "json").output
    assert run("users", "disable", "user1@example.org").exit_code == 0
    assert run("users", "enable", "user1@example.org").exit_code == 0
    result = run("users", "reset", "user2@example.org")
    assert result.exit_code == 0 and "one-time password for user2@example.org" in result.output
    result = run("users", "reset", "nobody@example.org")
    assert result.exit_code == 2 and "unknown user" in result.output
    result = run("audit", "--limit", "5")
    assert result.exit_code == 0 and "password_reset" in result.output and '{"by":"cli' in result.output
    assert run("audit", "--event", "user_disabled", "--since", "1d", "--format", "csv").output.count(
        "user_disabled") == 1
    result = run("audit", "--since", "yesterday")
    assert result.exit_code == 2 and "--since 'yesterday'" in result.output
