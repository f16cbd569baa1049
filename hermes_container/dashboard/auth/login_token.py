"""The dashboard's login token (HERMES_DASHBOARD_AUTH=token): a sign-in with no identity
provider, for a first run.

One random token, made once and kept in the volume (`$HERMES_HOME/dashboard/login-token`,
0600, in a 0700 directory), so it survives restarts and `hermes dashboard login-url`
can print it again. Whoever presents it gets an ordinary login session (auth/routes.py).
`rotate` replaces it and starts a new revocation generation, which ends every session.

The sign-in URL carries the token in the fragment (`/login#token=...`): browsers never
send a fragment to the server, so it reaches neither a proxy's access log nor ours; the
login page's script reads it and posts it.

Stdlib only (plus fsutil and revocations): the CLI imports this without FastAPI.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path

from hermes_container.dashboard.auth.revocations import REVOCATIONS_FILE, end_all_sessions
from hermes_container.fsutil import atomic_write_bytes

LOGIN_TOKEN_FILE = Path("dashboard", "login-token")
TOKEN_BYTES = 32  # 256 bits: guessing is hopeless; the rate limit only keeps logs quiet
MAX_PRESENTED = 256  # longer input is refused before any comparison
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,128}")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # binds reached here as localhost


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class LoginTokenFile:
    """The token file under one home. Reads go to the file each time, so a rotation by
    another process (the CLI) takes effect at the next login attempt."""

    def __init__(self, home_root: Path) -> None:
        self.path = home_root / LOGIN_TOKEN_FILE
        self.revocations = home_root / REVOCATIONS_FILE

    def read(self) -> str | None:
        """The current token, or None when there is none (or it is not one we made)."""
        try:
            with open(self.path, "rb") as fh:
                text = fh.read(MAX_PRESENTED).decode("ascii", "replace").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return text if _TOKEN.fullmatch(text) else None

    def ensure(self) -> str:
        """The token, made now if there is none yet (O_EXCL: two starters agree)."""
        token = self.read()
        if token is not None:
            return token
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = new_token()
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            # Someone else made it meanwhile, or it holds no valid token: replace it.
            existing = self.read()
            if existing is not None:
                return existing
            atomic_write_bytes(self.path, token.encode("ascii") + b"\n", mode=0o600)
            return token
        with os.fdopen(fd, "wb") as fh:
            fh.write(token.encode("ascii") + b"\n")
        return token

    def rotate(self) -> str:
        """A new token, and every existing session ended (a new revocation generation)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = new_token()
        atomic_write_bytes(self.path, token.encode("ascii") + b"\n", mode=0o600)
        end_all_sessions(self.revocations)
        return token

    def matches(self, presented: str | None) -> bool:
        """Whether `presented` is the current token, compared in constant time."""
        if not presented or len(presented) > MAX_PRESENTED:
            return False
        current = self.read()
        if current is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), current.encode("ascii"))


def base_url(host: str, port: int, public_url: str | None) -> str:
    """Where a browser reaches the dashboard: the public URL, else http://host:port (a
    wildcard bind is reached on this machine as localhost, e.g. a published port)."""
    if public_url:
        return public_url.rstrip("/")
    if host in WILDCARD_HOSTS:
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def sign_in_url(base: str, token: str) -> str:
    return f"{base}/login#token={token}"
