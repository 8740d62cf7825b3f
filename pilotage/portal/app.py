"""The web portal (`pilotage serve`): a Starlette application, its routes and their handlers.

Every handler starts from the request's identity (`security.identify`) and
the role its page needs (`security.require`), and every figure it shows
comes from the cube with the user's organisation's scope (`content`), the
only place the scope is applied: pages, exports, downloads and the API alike.
Handlers are plain functions run in Starlette's thread pool; each opens the
warehouse read-only for the time of its queries, so a daily load can publish
a new state between two requests.
"""

from __future__ import annotations

import contextlib
import io
import threading
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, RedirectResponse,
                                 Response)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pilotage.cubes.model import DIMENSIONS
from pilotage.portal import security
from pilotage.portal.content import Content, DataState
from pilotage.portal.explorer import MAX_ROWS, Exploration, ExplorationError, chart_figure
from pilotage.portal.pages import render
from pilotage.portal.security import Denied, Identity
from pilotage.reports.periods import week_bounds
from pilotage.warehouse import Warehouse

STATIC = Path(__file__).parent / "static"
QUERY_SLOTS = 2  # DuckDB already uses both cores for one query: more at once only queue inside it


async def run_in_threadpool_limited(func, *args, limiter):
    return await anyio.to_thread.run_sync(partial(func, *args), limiter=limiter)


@dataclass(frozen=True)
class PortalSettings:
    warehouse: Path
    accounts: Path  # the SQLite file of organisations, users, sessions, audit
    cache: Path  # rendered summaries
    alerts: Path | None = None  # the alert rules (to show the alerts in scope)
    https: bool = False
    session_hours: float = 8.0
    warm: bool = True  # build every organisation's dashboard ahead of its users, and again after each load


def create_app(settings: PortalSettings, accounts=None) -> Starlette:
    """The application; `accounts` defaults to the store at settings.accounts (tests give one with a clock)."""
    from pilotage.portal.accounts import Accounts

    accounts = accounts or Accounts(settings.accounts)
    content = Content(Warehouse(settings.warehouse), settings.cache)
    portal = _Portal(settings, accounts, content)
    routes = [
        Route("/login", portal.login, methods=["GET", "POST"]),
        Route("/logout", portal.logout, methods=["POST"]),
        Route("/password", portal.password, methods=["GET", "POST"]),
        Route("/", portal.dashboard),
        Route("/summaries", portal.summaries),
        Route("/summaries/{week}/{region}.{fmt}", portal.summary_file),
        Route("/explorer", portal.explorer),
        Route("/explorer/export.{fmt}", portal.export),
        Route("/alerts", portal.alerts),
        Route("/admin", portal.admin_users),
        Route("/admin/users/{action}", portal.admin_user_action, methods=["POST"]),
        Route("/admin/{section}", portal.admin_section),
        Route("/api/indicators", portal.api_indicators),
        Route("/api/query", portal.api_query, methods=["POST"]),
        Route("/static/plotly.min.js", portal.plotly_js),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    async def on_denied(request: Request, denied: Exception) -> Response:
        return portal.denied(request, denied)

    async def headers(request: Request, call_next):
        return security.add_headers(await call_next(request), settings.https)

    stop = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        """Keep every organisation's dashboard built for the newest data, in a background thread."""
        if settings.warm:
            scopes = (lambda: list({str(o.scope): o.scope for o in accounts.orgs()}.values()))
            threading.Thread(target=content.warm, args=(scopes, stop), daemon=True, name="pilotage-warm").start()
        yield
        stop.set()

    app = Starlette(routes=routes, exception_handlers={Denied: on_denied},
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=headers)], lifespan=lifespan)
    app.state.portal = portal
    return app


class _Portal:
    def __init__(self, settings: PortalSettings, accounts, content: Content):
        self.settings, self.accounts, self.content = settings, accounts, content
        # DuckDB work (explorer, API, summaries) at most this many at once: more only thrash 2 cores and
        # keep the thread pool from the cheap pages
        self.queries = anyio.CapacityLimiter(QUERY_SLOTS)
        self.renders = anyio.CapacityLimiter(1)  # a summary rendered on demand: seconds, so one at a time, aside

    async def ask(self, question, scope, state):
        """An answer from the cache, else computed within the query slots."""
        cached = self.content.cached_answer(question, scope, state)
        if cached is not None:
            return cached
        return await run_in_threadpool_limited(self.content.answer, question, scope, state, limiter=self.queries)

    # -- plumbing --------------------------------------------------------------------------------

    async def identity(self, request: Request, role: str = "reader", *, password_page: bool = False,
                       api: bool = False) -> Identity:
        identity = security.identify(request, self.accounts)  # SQLite by key: well under a millisecond
        await security.check_csrf(request, identity)
        return security.require(identity, role, password_page=password_page, api=api)

    def denied(self, request: Request, denied: Denied) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": denied.message}, status_code=denied.status)
        if denied.location:
            target = denied.location
            if denied.location == "/login" and request.method == "GET" and request.url.path != "/":
                from urllib.parse import quote

                target += "?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            return RedirectResponse(target, status_code=303)
        return HTMLResponse(render("error.html", title="Accès refusé" if denied.status == 403 else "Erreur",
                                   status=denied.status, message=denied.message, page="", identity=None,
                                   scope_label=""), status_code=denied.status)

    def page(self, template: str, identity: Identity, page: str, status: int = 200, **context) -> HTMLResponse:
        from pilotage.reports.delivery.recipients import scope_label

        html = render(template, identity=identity, page=page, scope_label=scope_label(identity.user.scope),
                      **context)
        return HTMLResponse(html, status_code=status)

    def audit(self, request: Request, identity: Identity | None, event: str, detail: str | None = None) -> None:
        self.accounts.audit(event, identity.user.login if identity else None, security.client_address(request),
                            detail)

    # -- login ------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        from pilotage.portal.accounts import LoginRefused

        next_page = request.query_params.get("next") or ""
        if request.method == "GET":
            return self._login_page(next_page)
        form = await request.form()
        next_page = str(form.get("next") or "")
        if not security.login_csrf_ok(request, form.get("csrf")):
            return self._login_page(next_page, "La page de connexion a expiré : recommencez.", status=403)
        login, password = str(form.get("login") or "").strip(), str(form.get("password") or "")
        address = security.client_address(request)
        try:
            user = await run_in_threadpool(self.accounts.authenticate, login, password, address)
        except LoginRefused as refused:
            if refused.reason == "throttled":
                wait = f" Réessayez dans {int(refused.retry_after or 60) // 60 + 1} min." if refused.retry_after else ""
                return self._login_page(next_page, "Trop de tentatives." + wait, login, status=429)
            if refused.reason == "expired":
                return self._login_page(next_page, "Mot de passe provisoire expiré : demandez-en un nouveau à "
                                        "votre administrateur.", login, status=401)
            return self._login_page(next_page, "Adresse ou mot de passe incorrect.", login, status=401)
        session = await run_in_threadpool(self.accounts.open_session, user, address, self.settings.session_hours)
        target = "/password" if user.must_change else (next_page if next_page.startswith("/") and
                                                           not next_page.startswith("//") else "/")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(security.SESSION_COOKIE, session.token, max_age=int(self.settings.session_hours * 3600),
                            httponly=True, samesite="lax", secure=self.settings.https, path="/")
        response.delete_cookie(security.LOGIN_CSRF_COOKIE, path="/login")
        return response

    def _login_page(self, next_page: str, message: str = "", login: str = "", status: int = 200) -> Response:
        token = security.new_login_csrf()
        response = HTMLResponse(render("login.html", csrf=token, next=next_page, message=message, login=login,
                                       page="login", identity=None, scope_label=""), status_code=status)
        response.set_cookie(security.LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                            secure=self.settings.https, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        identity = await self.identity(request, password_page=True)
        if identity.session:
            await run_in_threadpool(self.accounts.close_session, identity.session.token,
                                    security.client_address(request))  # records the logout
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE, path="/")
        return response

    async def password(self, request: Request) -> Response:
        from pilotage.portal.accounts import AccountsError, LoginRefused

        identity = await self.identity(request, password_page=True)
        if request.method == "GET":
            return self.page("password.html", identity, "password", message="")
        form = await request.form()
        current, new, confirm = (str(form.get(k) or "") for k in ("current", "new", "confirm"))
        if new != confirm:
            return self.page("password.html", identity, "password", 400,
                             message="Les deux saisies du nouveau mot de passe diffèrent.")
        try:
            await run_in_threadpool(self.accounts.authenticate, identity.user.login, current,
                                    security.client_address(request))
        except LoginRefused:
            return self.page("password.html", identity, "password", 400, message="Mot de passe actuel incorrect.")
        try:
            await run_in_threadpool(partial(self.accounts.set_password, identity.user.id, new,
                                            keep_session=identity.session.token if identity.session else None,
                                            address=security.client_address(request)))
        except AccountsError as exc:
            return self.page("password.html", identity, "password", 400, message=_password_problem(exc))
        return RedirectResponse("/", status_code=303)

    # -- pages ------------------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        identity = await self.identity(request)
        state = await run_in_threadpool(self.content.state)
        body, prepared = await run_in_threadpool(self.content.dashboard_html, identity.user.scope, state)
        shown = state if prepared.view.as_of == state.as_of else DataState(prepared.view.as_of, 0)
        return self.page("dashboard.html", identity, "dashboard", body=body, state=shown, charts=True)

    async def summaries(self, request: Request) -> Response:
        identity = await self.identity(request)
        state = await run_in_threadpool(self.content.state)
        weeks = [(w, *week_bounds(w)) for w in self.content.weeks(state)]
        return self.page("summaries.html", identity, "summaries", state=state, weeks=weeks,
                         regions=self.content.summary_regions(identity.user.scope))

    async def summary_file(self, request: Request) -> Response:
        identity = await self.identity(request)
        week, region, fmt = (request.path_params[k] for k in ("week", "region", "fmt"))
        state = await run_in_threadpool(self.content.state)
        if fmt not in ("html", "xlsx") or week not in self.content.weeks(state, 53):
            raise Denied(404, "Cette synthèse n'existe pas.")
        path = await run_in_threadpool_limited(self.content.summary_files, identity.user.scope, week, state, region,
                                               fmt, limiter=self.renders)
        if path is None:  # a region outside the user's scope: as if it did not exist
            raise Denied(404, "Cette synthèse n'existe pas dans votre périmètre.")
        self.audit(request, identity, "download", f"{week} {region}.{fmt}")
        return FileResponse(path, filename=path.name, media_type=_MEDIA[fmt])

    async def explorer(self, request: Request) -> Response:
        identity = await self.identity(request, "analyst")
        catalog = self.content.cube.catalog
        context = dict(question=None, table=None, message="", where_text="", charts=True,
                       indicators=[catalog[n] for n in catalog.names()],
                       dimensions=[(n, d) for n, d in DIMENSIONS.items()])
        if request.query_params.getlist("measure"):
            try:
                question = Exploration.from_params(request.query_params, catalog)
                state = await run_in_threadpool(self.content.state)
                table = await self.ask(question, identity.user.scope, state)
            except ExplorationError as exc:
                context["message"] = str(exc)
            else:
                self.audit(request, identity, "query", question.query_string())
                rows = table.to_pylist()
                context.update(question=question, table=table, query_string=question.query_string(),
                               columns=table.column_names, rows=[[_cell(v) for v in r.values()]
                                                                 for r in rows[:MAX_ROWS]],
                               truncated=max(0, len(rows) - MAX_ROWS), figure=chart_figure(table, question, catalog),
                               where_text=" ".join(f"{d}:{','.join(v)}" for d, v in question.where))
        return self.page("explorer.html", identity, "explorer", **context)

    async def export(self, request: Request) -> Response:
        identity = await self.identity(request, "analyst")
        fmt = request.path_params["fmt"]
        if fmt not in ("csv", "xlsx"):
            raise Denied(404, "Format inconnu.")
        try:
            question = Exploration.from_params(request.query_params, self.content.cube.catalog)
            state = await run_in_threadpool(self.content.state)
            table = await self.ask(question, identity.user.scope, state)
        except ExplorationError as exc:
            raise Denied(400, str(exc)) from None
        self.audit(request, identity, "export", f"{fmt} {question.query_string()}")
        from pilotage import formats

        rows = table.to_pylist()
        if fmt == "csv":
            body = formats.to_csv(rows, table.column_names).encode("utf-8")
        else:
            buffer = io.BytesIO()
            formats.to_xlsx(rows, table.column_names, buffer)
            body = buffer.getvalue()
        return Response(body, media_type=_MEDIA[fmt],
                        headers={"Content-Disposition": f'attachment; filename="pilotage-explorateur.{fmt}"'})

    async def alerts(self, request: Request) -> Response:
        identity = await self.identity(request)
        states, history = await run_in_threadpool(self._alerts_in_scope, identity.user.scope)
        return self.page("alerts.html", identity, "alerts", states=states, history=history)

    def _alerts_in_scope(self, scope):
        from pilotage.reports.alerts.state import alert_history, alert_states

        warehouse = self.content.warehouse
        inside = _member_filter(scope, self.settings.alerts)
        return ([r for r in alert_states(warehouse) if inside(r)],
                [r for r in alert_history(warehouse, limit=500) if inside(r)][:100])

    # -- administration ---------------------------------------------------------------------------

    async def admin_users(self, request: Request) -> Response:
        identity = await self.identity(request, "admin")
        return self._admin_users_page(identity, request.query_params.get("message", ""))

    def _admin_users_page(self, identity: Identity, message: str = "") -> Response:
        users = [u for u in self.accounts.users() if _within(u.org.scope, identity.user.scope)]
        rows = [{"key": u.login, "cells": [u.login, u.name, u.org.name, u.role,
                                           "désactivé" if u.disabled else "actif",
                                           "provisoire" if u.must_change else ""]} for u in users]
        return self.page("admin.html", identity, "admin", heading=f"Utilisateurs ({len(rows)})", section="users",
                         columns=["Adresse", "Nom", "Organisation", "Rôle", "État", "Mot de passe"], rows=rows,
                         actions=[("disable", "Désactiver"), ("reset", "Réinitialiser")], message=message)

    async def admin_user_action(self, request: Request) -> Response:
        identity = await self.identity(request, "admin")
        form = await request.form()
        login, action = str(form.get("login") or ""), request.path_params["action"]
        try:
            user = self.accounts.user(login)
        except Exception:
            raise Denied(404, "Utilisateur inconnu.") from None
        if not _within(user.org.scope, identity.user.scope):
            raise Denied(403, "Cet utilisateur n'est pas dans votre périmètre.")
        if action == "disable":
            self.accounts.disable_user(login)
            message = f"{login} est désactivé."
        elif action == "reset":
            password = self.accounts.reset_password(login)
            message = f"Mot de passe provisoire de {login} : {password}"
        else:
            raise Denied(404, "Action inconnue.")
        self.audit(request, identity, f"admin_{action}", login)
        return self._admin_users_page(identity, message)

    async def admin_section(self, request: Request) -> Response:
        identity = await self.identity(request, "admin")
        section = request.path_params["section"]
        scope = identity.user.scope
        if section == "orgs":
            orgs = [o for o in self.accounts.orgs() if _within(o.scope, scope)]
            columns, rows = ["Nom", "Type", "Périmètre"], [[o.name, o.type, str(o.scope)] for o in orgs]
            heading = f"Organisations ({len(rows)})"
        elif section == "loads":
            columns, rows = await run_in_threadpool(self._table, "SELECT drop_date, outcome, started, finished, "
                                                    "message FROM load_drops ORDER BY load_id DESC LIMIT 200")
            heading = "Chargements des dépôts (200 derniers)"
        elif section == "rejects":
            columns, rows = await run_in_threadpool(self._table, 'SELECT drop_date, file, line, "column", rule, raw '
                                                    "FROM rejects ORDER BY drop_date DESC, file, line LIMIT 500")
            heading = "Quarantaine (500 dernières lignes rejetées)"
        elif section == "audit":
            entries = self.accounts.audit_log(300)
            columns = list(entries[0]) if entries else ["—"]
            rows = [list(e.values()) for e in entries]
            heading = "Journal d'audit (300 derniers événements)"
        else:
            raise Denied(404, "Page inconnue.")
        return self.page("admin.html", identity, "admin", heading=heading, section=section, columns=columns,
                         rows=[{"key": "", "cells": [_cell(v) for v in r]} for r in rows], actions=[], message="")

    def _table(self, sql: str):
        with self.content.warehouse.connect() as con:
            result = con.execute(sql)
            return [d[0] for d in result.description], result.fetchall()

    # -- API and static ---------------------------------------------------------------------------

    async def api_indicators(self, request: Request) -> Response:
        await self.identity(request, api=True)
        catalog = self.content.cube.catalog
        return JSONResponse([{"name": i.name, "label": i.label, "kind": i.kind, "format": i.format,
                              "description": i.description} for i in (catalog[n] for n in catalog.names())])

    async def api_query(self, request: Request) -> Response:
        identity = await self.identity(request, "analyst", api=True)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=400)
        try:
            question = Exploration.from_json(body, self.content.cube.catalog)
            state = await run_in_threadpool(self.content.state)
            table = await self.ask(question, identity.user.scope, state)
        except ExplorationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.audit(request, identity, "query", f"api {question.query_string()}")
        meta = table.schema.metadata or {}
        return JSONResponse({"query": question.as_dict(), "scope": str(identity.user.scope),
                             "as_of": (meta.get(b"as_of") or b"").decode(),
                             "columns": table.column_names, "rows": [_json(r) for r in table.to_pylist()]})

    async def plotly_js(self, request: Request) -> Response:
        import plotly

        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


_MEDIA = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _json(row: dict) -> dict:
    from decimal import Decimal

    return {k: (float(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, date) else v)
            for k, v in row.items()}


def _password_problem(exc) -> str:
    """The password policy's refusal, in French for the page."""
    problem = getattr(exc, "problem", str(exc)).lower()
    if "too short" in problem:
        return "Le nouveau mot de passe doit compter 12 caractères au moins."
    if "too long" in problem:
        return "Le nouveau mot de passe est trop long."
    if "differ" in problem:
        return "Le nouveau mot de passe doit différer de l'actuel."
    if "login" in problem:
        return "Le nouveau mot de passe ne doit pas reprendre votre adresse."
    if "few characters" in problem:
        return "Le nouveau mot de passe doit compter au moins 4 caractères différents."
    return "Ce mot de passe n'est pas accepté : choisissez-en un plus long et plus varié."


def _within(inner, outer) -> bool:
    """Whether scope `inner` lies within scope `outer` (by departments)."""
    return outer.is_national or inner.departments() <= outer.departments()


def _member_filter(scope, rules_path: Path | None):
    """A predicate on alert rows: the member's departments (as the alert emails judge them) lie within the scope."""
    if scope.is_national:
        return lambda row: True
    from pilotage.reports.alerts.notify import member_departments
    from pilotage.reports.alerts.rules import load_rules

    rules = load_rules(rules_path) if rules_path and Path(rules_path).exists() else None
    allowed = scope.departments()

    def inside(row: dict) -> bool:
        needed = member_departments(rules.get(row["rule"]) if rules else None, row["member"])
        return bool(needed) and needed <= allowed

    return inside
