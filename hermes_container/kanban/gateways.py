"""The profiles' gateways as the dispatcher sees them: which assignees exist here, which
gateways answer, and how to reach one (loopback, its port, its own API key).

The work layer never asks s6 whether a gateway runs: it asks the gateway (GET /health,
which must name the profile, so a stranger on a reused port does not count).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

from hermes_container.config import read_port
from hermes_container.errors import HermesError
from hermes_container.gateway.profile_settings import read_api_key
from hermes_container.home import HermesHome
from hermes_container.profiles import list_profiles

LOOPBACK = "127.0.0.1"
HEALTH_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Endpoint:
    profile: str
    port: int
    api_key: str  # never logged: Endpoint is not printed anywhere


def probe(endpoint: Endpoint, timeout: float = HEALTH_TIMEOUT_SECONDS) -> bool:
    """True when the gateway on `endpoint.port` answers /health as this profile."""
    conn = http.client.HTTPConnection(LOOPBACK, endpoint.port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read(4096)
        if response.status != 200:
            return False
        return bool(json.loads(body).get("profile") == endpoint.profile)
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return False
    finally:
        conn.close()


class GatewayDirectory:
    """One tick's view of the profiles: looked up once per profile, then remembered
    until `refresh()` (the next tick), so 10,000 tasks cost 50 lookups, not 10,000."""

    def __init__(self, home: HermesHome) -> None:
        self.home = home
        self._profiles: set[str] | None = None
        self._endpoints: dict[str, Endpoint | None] = {}
        self._up: dict[str, bool] = {}

    def refresh(self) -> None:
        self._profiles = None
        self._endpoints.clear()
        self._up.clear()

    def profiles(self) -> set[str]:
        if self._profiles is None:
            self._profiles = set(list_profiles(self.home))
        return self._profiles

    def exists(self, profile: str) -> bool:
        return profile in self.profiles()

    def endpoint(self, profile: str) -> Endpoint | None:
        """Port and key of the profile's gateway; None when its config lacks either."""
        if profile not in self._endpoints:
            self._endpoints[profile] = self._lookup(profile)
        return self._endpoints[profile]

    def _lookup(self, profile: str) -> Endpoint | None:
        directory = self.home.profile_dir(profile)
        try:
            port = read_port(directory)
            key = read_api_key(directory)
        except (HermesError, OSError):
            return None
        return None if port is None else Endpoint(profile, port, key)

    def is_up(self, profile: str) -> bool:
        if profile not in self._up:
            endpoint = self.endpoint(profile)
            self._up[profile] = endpoint is not None and probe(endpoint)
        return self._up[profile]
