"""GET /metrics: the container's Prometheus metrics, for a bearer token only.

The token is HERMES_METRICS_TOKEN, or the content of the file HERMES_METRICS_TOKEN_FILE
(secret_env.py: minus one trailing newline; setting both is an error), at least
MIN_TOKEN characters, read when the app is built.

This is the outermost layer of the app (install() adds it last), and it answers the
exact canonical `GET|HEAD /metrics` itself, so:
- the bearer check is the only way in: a dashboard session, the loopback session
  token or an OAuth login open nothing here, and /metrics is not in the shared
  public-paths allowlist (auth/public_paths.py); any other spelling of the path
  (`/metrics/`, `/%6detrics`) is not canonical, goes through the normal gates, and
  finds no route;
- Prometheus may scrape by any host name or address: the Host check guards browser
  sessions against DNS rebinding, and a bearer token is no ambient browser credential;
- with no token configured the answer is 404 (metrics are off: there is no such
  endpoint, for anyone), not 403, which would say there is something to be allowed to.
A wrong or missing token is 401 with `WWW-Authenticate: Bearer`, compared in constant
time. The scrape itself runs in a worker thread, one at a time (metrics/scrape.py).
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Mapping
from typing import Any

from hermes_container.dashboard.asgi import ASGIApp, Receive, Scope, Send, header, send_json
from hermes_container.dashboard.auth.public_paths import canonical_path
from hermes_container.dashboard.headers import COMMON_HEADERS
from hermes_container.errors import ConfigError
from hermes_container.home import HermesHome
from hermes_container.metrics.collectors import AuthCounters
from hermes_container.metrics.scrape import Scraper
from hermes_container.secret_env import file_variable, secret_from_env

PATH = "/metrics"
TOKEN_ENV = "HERMES_METRICS_TOKEN"  # noqa: S105 (a variable name)
TOKEN_FILE_ENV = file_variable(TOKEN_ENV)
MIN_TOKEN = 16
_DISABLED = {
    "error": "not_found",
    "detail": f"metrics are off: set {TOKEN_ENV} or {TOKEN_FILE_ENV} to enable {PATH}",
}
_UNAUTHORIZED = {"error": "unauthenticated", "detail": "send Authorization: Bearer <token>"}


def metrics_token(env: Mapping[str, str] | None = None) -> bytes | None:
    """The configured token, or None (metrics off); ConfigError when misconfigured."""
    value = secret_from_env(TOKEN_ENV, os.environ if env is None else env)
    if value is None:
        return None
    if len(value) < MIN_TOKEN:
        raise ConfigError(f"{TOKEN_ENV} must be at least {MIN_TOKEN} characters long")
    return value.encode("utf-8")


def presented_bearer(scope: Scope) -> bytes | None:
    auth = header(scope, b"authorization") or ""
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("latin-1")


class MetricsEndpoint:
    def __init__(self, app: ASGIApp, *, token: bytes | None, scraper: Scraper) -> None:
        self.app = app
        self.token = token
        self.scraper = scraper

    def authorized(self, scope: Scope) -> bool:
        presented = presented_bearer(scope)
        # Both sides are compared even when nothing was presented: constant time.
        return hmac.compare_digest(presented or b"", self.token or b"\0") and bool(presented)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != PATH or canonical_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        if self.token is None:
            await send_json(send, 404, _DISABLED, COMMON_HEADERS)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await send_json(
                send,
                405,
                {"error": "method_not_allowed"},
                [(b"allow", b"GET, HEAD"), *COMMON_HEADERS],
            )
            return
        if not self.authorized(scope):
            await send_json(
                send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer"), *COMMON_HEADERS]
            )
            return
        body, content_type = await asyncio.to_thread(self.scraper.render, header(scope, b"accept"))
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *COMMON_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


def install(app: Any, home: HermesHome, env: Mapping[str, str] | None = None) -> Scraper:
    """Count the dashboard's logins, and serve /metrics in front of every other layer.

    Call it after every other add_middleware (it must be the outermost)."""
    counters = AuthCounters()
    app.state.hermes.audit.observer = counters.record
    scraper = Scraper(home, counters, env)
    app.state.metrics = scraper
    app.add_middleware(MetricsEndpoint, token=metrics_token(env), scraper=scraper)
    return scraper
