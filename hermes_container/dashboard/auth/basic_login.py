"""The basic login (HERMES_DASHBOARD_BASIC_USER + HERMES_DASHBOARD_BASIC_PASSWORD_HASH):
one user name and an argon2 password hash, for small installs without an identity
provider.

argon2-cffi does the hashing and the verification (the hash carries its own salt and
parameters). `hash_password` uses argon2id with 19 MiB, 2 passes, 1 lane (OWASP's
minimum), so a verification costs the dashboard ~19 MiB for a few tens of
milliseconds; hashes asking for more than MAX_MEMORY_KIB are refused at start, and
verifications run one at a time, so neither a large hash nor a burst of attempts can
balloon the process. Attempts are budgeted per client before any verification, exactly
like the login token's (auth/token_login.py).

A basic session records its user and a fingerprint of the hash (a SHA-256 prefix of the
hash string, which reveals nothing of the password): a new user name or a new password
hash ends the sessions made with the old one at the next restart.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from collections.abc import Mapping

from hermes_container.dashboard.auth.ratelimit import ClientLimiter, client_key

HASH_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
MAX_MEMORY_KIB = 64 * 1024
MAX_PASSWORD = 1024  # characters; longer input is refused before hashing
MAX_USER = 128
TIME_COST, MEMORY_KIB, PARALLELISM = 2, 19 * 1024, 1


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher(
        time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=PARALLELISM
    ).hash(password)


def hash_problem(value: str) -> str | None:
    """Why `value` is not a password hash this dashboard accepts, or None."""
    if not value.startswith(HASH_PREFIXES):
        return "is not an argon2 hash (make one with `hermes dashboard hash-password`)"
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        params = extract_parameters(value)
    except (InvalidHashError, ValueError):
        return "is not a well-formed argon2 hash"
    if params.memory_cost > MAX_MEMORY_KIB:
        return f"asks for {params.memory_cost} KiB per check; at most {MAX_MEMORY_KIB} is allowed"
    return None


def user_problem(user: str) -> str | None:
    if not user or len(user) > MAX_USER or not user.isprintable() or user != user.strip():
        return f"must be 1-{MAX_USER} printable characters without surrounding spaces"
    return None


def attempt_limiter() -> ClientLimiter:
    # The same budget as the login token: 5 at once per client, then one every 12 s.
    return ClientLimiter(rate=1 / 12, burst=5, global_rate=1.0, global_burst=60)


class BasicLogin:
    """The configured user and hash, the attempt budget, and the session checks. `allow`
    runs on the event loop; `verify` (CPU- and memory-heavy) in a worker thread."""

    def __init__(self, user: str, password_hash: str, limiter: ClientLimiter | None = None) -> None:
        self.user = user
        self._hash = password_hash
        self.fingerprint = hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]
        self.limiter = limiter or attempt_limiter()
        self._one_at_a_time = threading.Lock()

    def allow(self, ip: str | None) -> bool:
        return self.limiter.allow(client_key(ip))

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(1 / self.limiter.rate))

    def verify(self, user: str | None, password: str | None) -> bool:
        """Both right. The hash is checked even for a wrong user name, so the time taken
        does not tell which names exist."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        if not isinstance(user, str) or not isinstance(password, str):
            return False
        if len(password) > MAX_PASSWORD or len(user) > MAX_USER:
            return False
        user_ok = hmac.compare_digest(user.encode("utf-8"), self.user.encode("utf-8"))
        with self._one_at_a_time:
            password_ok: bool
            try:
                password_ok = PasswordHasher().verify(self._hash, password)
            except (VerificationError, InvalidHashError):
                password_ok = False
        return user_ok and password_ok

    def session_user(self) -> dict[str, object]:
        return {"provider": "basic", "sub": self.user, "login": self.user, "pw": self.fingerprint}

    def admits(self, user: Mapping[str, object]) -> bool:
        """A basic session of the configured user and password hash."""
        sub, fingerprint = user.get("sub"), user.get("pw")
        return (
            isinstance(sub, str)
            and isinstance(fingerprint, str)
            and hmac.compare_digest(sub.encode("utf-8"), self.user.encode("utf-8"))
            and hmac.compare_digest(
                fingerprint.encode("ascii", "replace"), self.fingerprint.encode()
            )
        )
