"""Who may read the dashboard, and the headers every response carries.

Bound to a loopback address the dashboard answers only requests addressed to a loopback host
name (a page elsewhere cannot reach it through DNS rebinding). With a token (required to bind
anywhere else) every request must carry it: once as ``?token=`` in the URL the server prints,
which a page request exchanges for an HttpOnly cookie (and a redirect to the same URL without
it, so the token leaves the address bar and the history), then the cookie; scripts may send
``Authorization: Bearer TOKEN`` instead. Tokens are compared in constant time.

Every response forbids framing, MIME sniffing, referrers and any script or connection that is
not the dashboard's own (a Content-Security-Policy): a value that slipped past the pages'
escaping still could not run.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

COOKIE = "localrules_dashboard"
TOKEN_ENV = "LOCALRULES_DASHBOARD_TOKEN"
MIN_TOKEN = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
"""Plotly draws with inline styles (hence ``style-src 'unsafe-inline'``); no inline script."""


def check_token(token: str) -> str:
    """A usable token: at least ``MIN_TOKEN`` characters a URL carries as they are (letters,
    digits, ``-``, ``_``, ``.``, ``~``), so the printed address works; ValueError."""
    if len(token) < MIN_TOKEN or not re.fullmatch(r"[A-Za-z0-9._~-]+", token):
        raise ValueError(f"--token: at least {MIN_TOKEN} characters, each a letter, digit, '-', "
                         "'_', '.' or '~' (e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe())')")
    return token


def cookie_name(port: int | None) -> str:
    """The token's cookie, one per port: two dashboards on one host keep their own."""
    return f"{COOKIE}_{port or 80}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port (``[::1]:8080`` → ``::1``)."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: the host check, the token, and the security headers."""

    def __init__(self, app: Any, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, with_headers)
        elif self.token is not None and "token" in request.query_params \
                and scope["method"] == "GET" and not scope["path"].startswith("/api/"):
            await self._exchange(request)(scope, receive, with_headers)
        else:
            await self.app(scope, receive, with_headers)

    def _refusal(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if self.loopback_only and _host_name(request.headers.get("host", "")) \
                not in LOOPBACK_NAMES:
            return JSONResponse({"error": "this dashboard answers only requests to localhost"},
                                status_code=421)
        if self.token is None or self._authorised(request):
            return None
        return JSONResponse(
            {"error": "this dashboard needs its token: open the address it printed at start "
                      "(…/?token=…), or send 'Authorization: Bearer TOKEN'"},
            status_code=401, headers={"www-authenticate": "Bearer"})

    def _authorised(self, request: Any) -> bool:
        given: Sequence[str] = [request.cookies.get(cookie_name(request.url.port), ""),
                                request.query_params.get("token", "")]
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = [*given, credential.strip()]
        expected = self.token.encode()
        return any(hmac.compare_digest(g.encode(), expected) for g in given if g)

    def _exchange(self, request: Any) -> Any:
        """The token from the URL, as a cookie, and the same page without it."""
        from starlette.responses import RedirectResponse

        query = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = "/" + request.url.path.lstrip("/\\")  # never "//host": this server only
        if query:
            from urllib.parse import urlencode

            target += "?" + urlencode(query)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(cookie_name(request.url.port), self.token, httponly=True,
                            samesite="strict",
                            secure=request.url.scheme == "https")
        return response
