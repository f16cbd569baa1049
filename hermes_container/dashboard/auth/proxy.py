"""Who is really on the other end: `X-Forwarded-*` is believed only from trusted proxies.

`HERMES_DASHBOARD_TRUSTED_PROXIES` lists proxy addresses or CIDRs (comma separated).
uvicorn's own proxy handling is switched off so that this is the only place deciding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from hermes_container.dashboard.asgi import Scope, header

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for value in values:
        value = value.strip()
        if value:
            networks.append(ipaddress.ip_network(value, strict=False))
    return tuple(networks)


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    def trusts(self, host: str | None) -> bool:
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def _peer(self, scope: Scope) -> str | None:
        client = scope.get("client")
        return str(client[0]) if client else None

    def is_https(self, scope: Scope) -> bool:
        if scope.get("scheme") in ("https", "wss"):
            return True
        if not self.trusts(self._peer(scope)):
            return False
        proto = header(scope, b"x-forwarded-proto") or ""
        return proto.split(",")[0].strip().lower() == "https"

    def client_ip(self, scope: Scope) -> str | None:
        """The peer, or the right-most untrusted hop of X-Forwarded-For behind our proxies."""
        peer = self._peer(scope)
        if not self.trusts(peer):
            return peer
        forwarded = header(scope, b"x-forwarded-for") or ""
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self.trusts(hop):
                return hop[:64]
        return peer

    def origin(self, scope: Scope) -> str:
        """scheme://host of this request as the browser sees it (for Origin checks).

        The Host header is only trustworthy once auth/hosts.py (OAuth mode) or the loopback
        gate has checked it; both sit outside every caller of this.
        """
        scheme = "https" if self.is_https(scope) else "http"
        host = header(scope, b"host") or ""
        return f"{scheme}://{host}"
