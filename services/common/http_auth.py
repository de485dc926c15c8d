"""Operator routes: one secret, sent as a bearer token or carried by a cookie.

The read API and the alerts service answer two audiences on one port: residents (the
residents' page, open data, the CAP feed, the city map; /healthz and /readyz for probes)
and the operations centre (/ops, devices with their exact positions and which are
offline, readings, the alert history, /metrics, the live stream). The second are operator
routes: a request to one without the operator token is a 401 and learns nothing else.

The token is `settings.operator_token`, else the contents of `{state_dir}/operator-token`
(mode 0600), which the first process to need it creates. Scripts and Prometheus send
`Authorization: Bearer <token>`; a browser opens `/ops?token=<token>` once (what
`citywatch demo` prints), which sets an HttpOnly, SameSite=Strict cookie and redirects to
`/ops`, so the page's own requests (fetch, EventSource) carry it without any script
seeing the secret.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from services.common.errors import ConfigError
from services.common.settings import Settings

__all__ = ["COOKIE", "OPERATOR_TOKEN_FILE", "OperatorAuth", "operator_headers", "operator_token"]

OPERATOR_TOKEN_FILE: Final = "operator-token"
COOKIE: Final = "citywatch_operator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _read(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the operator token in {path}: {exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 {path}")
    return token or None


def operator_token(settings: Settings) -> str:
    """The operator secret: the setting, else the state folder's file (created if absent).

    The file is written whole under a temporary name and linked into place, so a process
    that races the first one reads either nothing (and links its own, which fails and
    then reads the winner's) or the complete token, never half of it.
    """
    if settings.operator_token is not None:
        return settings.operator_token.get_secret_value()
    path = settings.state_dir / OPERATOR_TOKEN_FILE
    found = _read(path)
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    token = _read(path)
    if token is None:
        raise ConfigError(f"{path} is empty: delete it and restart, or set the token")
    return token


def operator_headers(settings: Settings) -> dict[str, str]:
    """The header a script (the demo, the supervisor, the tests) sends to operator routes."""
    return {"Authorization": f"Bearer {operator_token(settings)}"}


class OperatorAuth:
    """Checks the operator token on a request; `require` wraps a handler with the check."""

    def __init__(self, token: str, realm: str) -> None:
        if not token:
            raise ConfigError("the operator token is empty")
        self._token = token.encode()
        self._realm = realm

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def authenticated(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return self._matches(value.strip())
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self._matches(cookie)

    def unauthorized(self, detail: str) -> web.Response:
        body = {"error": "unauthorized", "detail": detail}
        return web.json_response(
            body,
            status=401,
            dumps=lambda b: json.dumps(b, ensure_ascii=False),
            headers={"WWW-Authenticate": f'Bearer realm="{self._realm}"'},
        )

    def require(self, handler: Handler) -> Handler:
        """The handler, answering 401 to a request without the operator token."""

        async def operator_only(request: web.Request) -> web.StreamResponse:
            if not self.authenticated(request):
                return self.unauthorized(
                    "an operator route: send Authorization: Bearer <operator token>, or "
                    "open /ops?token=<operator token> once in a browser"
                )
            return await handler(request)

        return operator_only

    def page(self, handler: Handler) -> Handler:
        """An operator page: `?token=` logs a browser in (cookie, then a redirect to the
        page without the token in its address); otherwise like `require`."""
        protected = self.require(handler)

        async def login_or_page(request: web.Request) -> web.StreamResponse:
            given = request.query.get("token")
            if given is None:
                return await protected(request)
            if not self._matches(given):
                return self.unauthorized("the token is not the operator token")
            resp = web.HTTPSeeOther(request.path)
            resp.set_cookie(
                COOKIE,
                given,
                httponly=True,
                samesite="Strict",
                path="/",
                secure=request.secure,
            )
            return resp

        return login_or_page
