"""Token buckets per client for the audit events an unauthenticated client can cause.

Anyone can hit `/auth/login/...` or `/auth/callback/...`, and each hit used to write
an audit record. `ClientLimiter.allow(key)` lets each client (an IPv4 address, or an
IPv6 /64, which one subscriber usually owns whole) write a short burst and then a
slow trickle; one global bucket caps all clients together, so many addresses do not
add up to a flood either. What is refused is counted, and `drain()` hands the counts
back so that one aggregate record can say "N events suppressed from this client".

The table of clients is bounded (least recently seen is evicted first); the pending
count of an evicted client is folded into the `OTHERS` aggregate, never written on
eviction, so no pattern of addresses can make the limiter write more records.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

OTHERS = "others"  # the aggregate key of evicted clients' pending counts
UNKNOWN_CLIENT = "unknown"


def client_key(ip: str | None) -> str:
    """The bucket a client address belongs to: the address, or its /64 for IPv6."""
    if not ip:
        return UNKNOWN_CLIENT
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True)
class Suppressed:
    key: str
    count: int
    since: float  # wall-clock time of the first event that was refused


@dataclass
class _Bucket:
    tokens: float
    stamp: float  # monotonic time of the last refill
    suppressed: int = 0
    since: float = 0.0

    def take(self, now: float, rate: float, burst: float) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClientLimiter:
    """Not thread-safe: the caller (AuditLog) serialises calls."""

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        global_rate: float,
        global_burst: float,
        max_clients: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.global_rate, self.global_burst = global_rate, global_burst
        self.max_clients = max_clients
        self._clock, self._wall = clock, wall
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(global_burst, clock())
        self._others = _Bucket(0.0, 0.0)  # only its suppressed count is used

    def allow(self, key: str) -> bool:
        now = self._clock()
        bucket = self._clients.get(key)
        if bucket is None:
            bucket = self._clients[key] = _Bucket(self.burst, now)
            if len(self._clients) > self.max_clients:
                self._evict_oldest()
        else:
            self._clients.move_to_end(key)
        # The client's own bucket first: a client over its budget does not also eat
        # the global budget that other clients' events need.
        if bucket.take(now, self.rate, self.burst):
            if self._global.take(now, self.global_rate, self.global_burst):
                return True
            bucket.tokens += 1.0  # refused globally: the client keeps its token
        self._count(bucket)
        return False

    def _count(self, bucket: _Bucket, n: int = 1) -> None:
        if not bucket.suppressed:
            bucket.since = self._wall()
        bucket.suppressed += n

    def _evict_oldest(self) -> None:
        _, old = self._clients.popitem(last=False)
        if old.suppressed:
            since = old.since
            if not self._others.suppressed or since < self._others.since:
                self._others.since = since
            self._others.suppressed += old.suppressed

    def pending(self) -> bool:
        return bool(self._others.suppressed) or any(b.suppressed for b in self._clients.values())

    def drain(self) -> list[Suppressed]:
        """Every pending count (then reset): at most max_clients + 1 aggregates."""
        out = []
        for key, bucket in self._clients.items():
            if bucket.suppressed:
                out.append(Suppressed(key, bucket.suppressed, bucket.since))
                bucket.suppressed = 0
        if self._others.suppressed:
            out.append(Suppressed(OTHERS, self._others.suppressed, self._others.since))
            self._others.suppressed = 0
        return out
