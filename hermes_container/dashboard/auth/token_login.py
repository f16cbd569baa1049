"""The dashboard side of HERMES_DASHBOARD_AUTH=token: who may try the login token, and
how often.

Every attempt, right or wrong, takes one token from the client's bucket (the same
`ClientLimiter` the audit log uses) *before* the comparison, so a client past its budget
learns nothing about the token it sends. A person pasting a link tries once or twice;
a guesser is held to a trickle (and 256 random bits leave it nothing to find anyway).
"""

from __future__ import annotations

import math
from pathlib import Path

from hermes_container.dashboard.auth.login_token import LoginTokenFile
from hermes_container.dashboard.auth.ratelimit import ClientLimiter, client_key

SUBJECT = "operator"  # the session's user: whoever holds the token


def attempt_limiter() -> ClientLimiter:
    # 5 at once per client, then one every 12 s; all clients together 60, then 1 a second.
    return ClientLimiter(rate=1 / 12, burst=5, global_rate=1.0, global_burst=60)


class TokenLogin:
    """The token file and the attempt budget; used on the event loop only (the limiter
    is not thread-safe, and the route never awaits between `allow` and its answer)."""

    def __init__(self, home_root: Path, limiter: ClientLimiter | None = None) -> None:
        self.file = LoginTokenFile(home_root)
        self.limiter = limiter or attempt_limiter()

    def allow(self, ip: str | None) -> bool:
        return self.limiter.allow(client_key(ip))

    @property
    def retry_after(self) -> int:
        """Seconds until a client's next attempt may be allowed (for Retry-After)."""
        return max(1, math.ceil(1 / self.limiter.rate))

    def matches(self, presented: str | None) -> bool:
        return self.file.matches(presented)

    def session_user(self) -> dict[str, object]:
        return {"provider": "token", "sub": SUBJECT, "name": SUBJECT}
