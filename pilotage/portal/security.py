"""What every response and every request of the portal goes through: headers, identity, CSRF, roles.

- Security headers on every response, among them a Content-Security-Policy
  allowing scripts from the portal only (`script-src 'self'`: no inline
  script anywhere; the charts' data travel as JSON in non-executable
  `<script type="application/json">` blocks that /static/portal.js draws).
  plotly.js sets inline styles, hence `style-src 'unsafe-inline'`.
- Identity: the session cookie (HttpOnly, SameSite=Lax, Secure under HTTPS,
  with an expiry) or, for tools, `Authorization: Bearer <personal token>`.
- CSRF: every state-changing request authenticated by cookie must carry the
  session's token (form field `csrf` or header `X-CSRF-Token`); before login,
  a double-submit cookie protects the login form.
- Roles: reader < analyst < admin; a user whose password must change can only
  change it (or log out).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "pilotage_session"
LOGIN_CSRF_COOKIE = "pilotage_login_csrf"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
       "object-src 'none'")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class Denied(Exception):
    """The request may not go on: status and a message for the page (French)."""

    def __init__(self, status: int, message: str, location: str | None = None):
        super().__init__(message)
        self.status, self.message, self.location = status, message, location


@dataclass(frozen=True)
class Identity:
    user: object  # accounts.User
    session: object | None  # accounts.Session (None for a bearer token)
    token_auth: bool = False

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session else ""


def add_headers(response: Response, https: bool) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    if "cache-control" not in headers:
        headers["Cache-Control"] = "no-store"
    return response


def identify(request: Request, accounts) -> Identity | None:
    """The user behind the request: a bearer token, else the session cookie; None if neither holds."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        user = accounts.token_user(authorization[7:].strip())
        return Identity(user, None, token_auth=True) if user else None
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    session = accounts.session(token)
    return Identity(session.user, session) if session else None


async def check_csrf(request: Request, identity: Identity | None) -> None:
    """State-changing requests authenticated by cookie carry the session's CSRF token."""
    if request.method not in UNSAFE or identity is None or identity.token_auth:
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get("csrf")
    if not sent or not hmac.compare_digest(str(sent), identity.csrf):
        raise Denied(403, "Jeton de sécurité (CSRF) absent ou invalide : rechargez la page et recommencez.")


def require(identity: Identity | None, role: str = "reader", *, password_page: bool = False,
            api: bool = False) -> Identity:
    """The identity, if it may see the page; else Denied (to the login page for a browser)."""
    if identity is None:
        raise Denied(401, "Authentification requise.", None if api else "/login")
    user = identity.user
    if user.must_change and not password_page:
        raise Denied(403, "Changez d'abord votre mot de passe.", None if api else "/password")
    if not user.can(role):
        raise Denied(403, "Votre rôle ne donne pas accès à cette page.")
    return identity


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def login_csrf_ok(request: Request, sent: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and sent and hmac.compare_digest(cookie, sent))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
