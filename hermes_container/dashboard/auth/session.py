"""Signed session cookies (itsdangerous) exposed as `scope["session"]`.

The cookie holds a small JSON dict signed with the dashboard secret: the CSRF token,
the logged-in user, a random session id and the login time, plus authlib's pending
OAuth state while a login is in flight. It is HttpOnly, SameSite=Lax, Secure when the
request came over HTTPS (directly or via a trusted proxy), and carries no OAuth tokens.

Expiry: the signature timestamp is refreshed on activity (sliding idle timeout,
`idle_ttl`), and `iat` bounds the absolute lifetime (`max_age`). A cookie that was
valid but has expired is reported as `expired` so the API can say `session_expired`.

Ending a session: logged-out (and access-revoked) session ids are remembered until
their expiry, across restarts (auth/revocations.py), so a copied cookie dies too. A
login session also carries the revocation store's `gen`eration; a session of an older
generation (the store could not be trusted at start) is reported as `expired`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Literal

from anyio import to_thread
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from hermes_container.dashboard.asgi import ASGIApp, Message, Receive, Scope, Send, header
from hermes_container.dashboard.auth.proxy import TrustedProxies
from hermes_container.dashboard.auth.revocations import RevocationStore

COOKIE_NAME = "hermes_session"
SessionStatus = Literal["none", "ok", "expired", "invalid"]


class Session(dict[str, Any]):
    """A dict that remembers whether it must be written back."""

    modified = False

    def __setitem__(self, key: str, value: Any) -> None:
        self.modified = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.modified = True
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.modified = True
        return super().pop(key, *default)

    def clear(self) -> None:
        self.modified = True
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.modified = True
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.modified = True
        return super().setdefault(key, default)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class SessionCodec:
    secret: bytes
    idle_ttl: int = 8 * 3600
    max_age: int = 7 * 24 * 3600
    revocations: RevocationStore = field(default_factory=RevocationStore)  # in memory

    def __post_init__(self) -> None:
        self._serializer = URLSafeTimedSerializer(self.secret, salt="hermes-dashboard-session")

    def dumps(self, data: dict[str, Any]) -> str:
        return self._serializer.dumps(data)

    def login_session(self, user: dict[str, object]) -> dict[str, Any]:
        """A fresh session for a login: new id and CSRF token, issue time, generation."""
        return {
            "user": user,
            "sid": secrets.token_urlsafe(16),
            "iat": int(time.time()),
            "gen": self.revocations.generation,
            "csrf": new_csrf_token(),
        }

    def loads(self, raw: str | None) -> tuple[dict[str, Any], SessionStatus, float]:
        """(data, status, issued_at) — data is empty unless status is `ok`."""
        if not raw:
            return {}, "none", 0.0
        try:
            data, issued = self._serializer.loads(raw, max_age=self.idle_ttl, return_timestamp=True)
        except SignatureExpired:
            return {}, "expired", 0.0
        except BadSignature:
            return {}, "invalid", 0.0
        if not isinstance(data, dict):
            return {}, "invalid", 0.0
        if "user" in data:
            # A login session: all of these are set by login_session(), so a missing
            # one is not a session we made.
            iat, sid = data.get("iat"), data.get("sid")
            if not isinstance(iat, int | float) or not isinstance(sid, str):
                return {}, "invalid", 0.0
            if time.time() - iat > self.max_age:
                return {}, "expired", 0.0
            # `hermes dashboard login-url --rotate` may have ended every session from
            # another process: look at the file (a stat, at most once a second).
            self.revocations.refresh()
            if self.revocations.is_revoked(sid):
                return {}, "invalid", 0.0
            if data.get("gen") != self.revocations.generation:
                return {}, "expired", 0.0
        return data, "ok", issued.timestamp()

    def _expiry(self, data: Mapping[str, Any]) -> float:
        iat = data.get("iat")
        return (iat if isinstance(iat, int | float) else time.time()) + self.max_age

    def revoke(self, sid: str, expires_at: float | None = None) -> bool:
        """End `sid` now and on disk (blocking: use `end` on the event loop)."""
        return self.revocations.revoke(sid, expires_at or time.time() + self.max_age)

    async def end(self, data: Mapping[str, Any]) -> None:
        """End the login session `data` at once; persist it in a worker thread (fsync)."""
        sid = data.get("sid")
        if not isinstance(sid, str):
            return
        self.revocations.add(sid, self._expiry(data))
        await to_thread.run_sync(self.revocations.save)


def _cookie_value(scope: Scope, name: str) -> str | None:
    raw = header(scope, b"cookie")
    if not raw or name not in raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # malformed Cookie header: treat as no cookie
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class SessionMiddleware:
    """Loads the cookie into `scope["session"]`, writes it back when changed or due."""

    def __init__(
        self,
        app: ASGIApp,
        codec: SessionCodec,
        proxies: TrustedProxies,
        on_refresh: Callable[[Scope, dict[str, Any]], None] | None = None,
    ) -> None:
        self.app = app
        self.codec = codec
        self.proxies = proxies
        self.on_refresh = on_refresh
        # Re-sign an active logged-in session at most this often (sliding expiry).
        self.refresh_after = max(1, min(300, codec.idle_ttl // 4))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        data, status, issued = self.codec.loads(_cookie_value(scope, COOKIE_NAME))
        session = Session(data)
        scope["session"] = session
        scope["hermes.session_status"] = status
        if status == "ok" and "user" in data and time.time() - issued > self.refresh_after:
            session.modified = True
            if self.on_refresh is not None:
                self.on_refresh(scope, data)
        secure = self.proxies.is_https(scope)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and (
                session.modified or scope.get("hermes.session_clear")
            ):
                headers = list(message.get("headers", []))
                headers.append((b"set-cookie", self._cookie(session, scope, secure)))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _cookie(self, session: Session, scope: Scope, secure: bool) -> bytes:
        attrs = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
        if scope.get("hermes.session_clear") or not session:
            return f"{COOKIE_NAME}=; Max-Age=0{attrs}".encode("latin-1")
        value = self.codec.dumps(dict(session))
        return f"{COOKIE_NAME}={value}; Max-Age={self.codec.max_age}{attrs}".encode("latin-1")
