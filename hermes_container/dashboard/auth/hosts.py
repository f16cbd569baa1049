"""Which `Host` headers the dashboard answers to (OAuth mode, and insecure mode when set).

Without this, a request's Host header would pick the OAuth redirect URI and the CSRF
"own origin", and a DNS-rebinding page (a hostile name resolved to our address) would
be same-origin with us. So every request whose Host is not one of ours gets a 400
before any session or auth logic, /api/status included.

Ours are: the host of HERMES_DASHBOARD_PUBLIC_URL, the names in
HERMES_DASHBOARD_ALLOWED_HOSTS, the bind address when it is a specific one, and the
loopback names (localhost, 127.0.0.0/8, ::1). Loopback names and the bind address are
safe to accept because rebinding only ever produces the attacker's host *name*, and
they are what `hermes healthcheck` and a reverse proxy on the same machine send (Host:
127.0.0.1:9119). Ports are ignored: a port never turns a name into someone else's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from hermes_container.dashboard.asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    header,
    reject_websocket,
    send_json,
)
from hermes_container.dashboard.headers import COMMON_HEADERS

# host, [v6 literal] or host:port; nothing else (no userinfo, path, spaces or commas).
_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]{2,45})\]|(?P<name>[a-z0-9_](?:[a-z0-9_.-]{0,252}[a-z0-9_])?))"
    r"(?::[0-9]{1,5})?",
    re.ASCII,
)
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
BAD_HOST = {
    "error": "bad_host",
    "detail": "unknown Host header: open the dashboard at HERMES_DASHBOARD_PUBLIC_URL",
}


def parse_host(value: str | None) -> str | None:
    """The lower-case host name of a Host header (port dropped), None when malformed."""
    if value is None:
        return None
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    v6 = match.group("v6")
    if v6 is None:
        return match.group("name")
    try:
        return ipaddress.IPv6Address(v6).compressed
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_host_names(bind: str) -> frozenset[str]:
    """The bind address as a Host name (what the health probe sends), unless a wildcard."""
    if bind.strip().lower() in WILDCARD_BINDS:
        return frozenset()
    name = parse_host(bind if ":" not in bind or bind.startswith("[") else f"[{bind}]")
    return frozenset({name}) if name else frozenset()


class AllowedHosts:
    """Matches a Host header against our names (plus every loopback name)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def allows(self, host_header: str | None) -> bool:
        host = parse_host(host_header)
        return host is not None and (host in self.names or is_loopback(host))


class HostCheckMiddleware:
    """Outermost layer: a 400 for any HTTP request addressed to a host that is not ours."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.hosts.allows(header(scope, b"host")):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await reject_websocket(send)
            return
        await send_json(send, 400, BAD_HOST, COMMON_HEADERS)
