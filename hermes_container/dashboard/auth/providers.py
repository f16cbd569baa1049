"""Login providers through authlib: generic OIDC (discovery) and GitHub OAuth.

Every protocol step is authlib's: the authorization URL with `state`, PKCE
(`code_challenge_method=S256`) and, for OIDC, a `nonce`; the state check and code
exchange in `authorize_access_token`; and the ID token's signature (JWKS from
discovery), issuer, audience, expiry and nonce in `parse_id_token`. We only map the
resulting claims (or GitHub's API answers) to an `Identity`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hermes_container.dashboard.auth.allowlist import Identity
from hermes_container.dashboard.settings import DashboardSettings

log = logging.getLogger("hermes.dashboard")

GITHUB_AUTHORIZE_URL = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"  # noqa: S105 (a URL)
GITHUB_API = "https://api.github.com/"
HTTP_TIMEOUT = 10.0
LABELS = {"oidc": "Single sign-on (OIDC)", "github": "GitHub"}


class LoginError(Exception):
    """The provider round-trip failed; `reason` is safe to show and to audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    label: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "label": self.label, "login_url": f"/auth/login/{self.name}"}


_HASHED_CERT = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def tls_context(capath: str | None = None) -> ssl.SSLContext:
    """Verifying TLS context for the provider calls.

    Prefers the system's hashed CA directory: OpenSSL then loads only the CA a server
    actually chains to, instead of parsing a whole bundle (~2.5 MB of RSS). Falls back
    to certifi's bundle (what httpx would use) when there is no such directory.
    """
    capath = capath or ssl.get_default_verify_paths().capath
    try:
        hashed = capath is not None and any(_HASHED_CERT.fullmatch(n) for n in os.listdir(capath))
    except OSError:
        hashed = False
    if hashed:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname check + CERT_REQUIRED
        context.load_verify_locations(capath=capath)
        return context
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


class LoginProviders:
    """The configured providers; authlib (and httpx, joserfc, cryptography) is imported
    on the first login, not at start, so an idle dashboard stays small."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._oauth: Any = None

    def _registry(self) -> Any:
        if self._oauth is not None:
            return self._oauth
        with warnings.catch_warnings():
            # authlib 1.9 nags about httpx vs httpx2 on import; both work here.
            warnings.simplefilter("ignore", DeprecationWarning)
            from authlib.integrations.starlette_client import OAuth

        settings = self.settings
        oauth = OAuth()
        # authlib opens a new httpx client per step; one shared TLS context saves
        # re-reading the CA bundle each time (and the memory that churn leaves behind).
        tls = tls_context()
        if settings.oidc is not None:
            oauth.register(
                name="oidc",
                client_id=settings.oidc.client_id,
                client_secret=settings.oidc.client_secret,
                server_metadata_url=settings.oidc.metadata_url,
                client_kwargs={
                    "scope": settings.oidc.scopes,
                    "code_challenge_method": "S256",
                    "timeout": HTTP_TIMEOUT,
                    "verify": tls,
                },
            )
        if settings.github is not None:
            scope = "read:user user:email"
            if settings.allowlist.wants_github_orgs:
                scope += " read:org"
            oauth.register(
                name="github",
                client_id=settings.github.client_id,
                client_secret=settings.github.client_secret,
                authorize_url=GITHUB_AUTHORIZE_URL,
                access_token_url=GITHUB_TOKEN_URL,
                api_base_url=GITHUB_API,
                client_kwargs={
                    "scope": scope,
                    "code_challenge_method": "S256",
                    "timeout": HTTP_TIMEOUT,
                    "verify": tls,
                },
            )
        self._oauth = oauth
        return oauth

    @property
    def names(self) -> list[str]:
        return self.settings.oauth_providers

    def info(self) -> list[ProviderInfo]:
        return [ProviderInfo(name, LABELS[name]) for name in self.names]

    def _client(self, name: str) -> Any:
        if name not in self.names:
            raise LoginError("unknown_provider")
        return self._registry().create_client(name)

    async def start(self, request: Request, name: str, redirect_uri: str) -> Response:
        client = self._client(name)
        try:
            response: Response = await client.authorize_redirect(request, redirect_uri)
        except Exception as exc:  # discovery failed: IdP down or misconfigured
            log.warning("cannot start a %s login: %s", name, type(exc).__name__)
            raise LoginError("provider_unreachable") from None
        return response

    async def finish(self, request: Request, name: str) -> Identity:
        from authlib.integrations.base_client import OAuthError

        client = self._client(name)
        try:
            if name == "oidc":
                return await self._finish_oidc(client, request)
            return await self._finish_github(client, request)
        except LoginError:
            raise
        except OAuthError as exc:
            raise LoginError(str(exc.error or "oauth_error")[:80]) from None
        except Exception as exc:  # network errors, bad tokens, malformed answers
            log.warning("%s login failed: %s", name, type(exc).__name__)
            raise LoginError(f"invalid_response:{type(exc).__name__}") from None

    async def _finish_oidc(self, client: Any, request: Request) -> Identity:
        assert self.settings.oidc is not None
        metadata = await client.load_server_metadata()
        issuer = str(metadata.get("issuer", "")).rstrip("/")
        if issuer != self.settings.oidc.issuer.rstrip("/"):
            raise LoginError("issuer_mismatch")  # discovery must describe the issuer we trust
        # The nonce this login sent, read before authlib clears the state: checked again
        # below, whatever authlib's own check did (with httpx2 installed, authlib 1.9
        # accepted an ID token carrying another login's nonce in our tests).
        state = await client.framework.get_state_data(
            request.session, request.query_params.get("state") or ""
        )
        sent = state.get("nonce") if isinstance(state, dict) else None
        token = await client.authorize_access_token(request)
        claims = token.get("userinfo")
        if not claims or not claims.get("sub"):
            raise LoginError("no_id_token")  # authlib validates only a token it is given
        got = claims.get("nonce")
        if not (
            isinstance(sent, str)
            and isinstance(got, str)
            and hmac.compare_digest(sent.encode(), got.encode())
        ):
            raise LoginError("invalid_response:InvalidClaimError")
        return Identity(
            provider="oidc",
            subject=str(claims["sub"]),
            email=verified_email(
                claims, allow_missing=self.settings.oidc.allow_missing_email_verified
            ),
            name=str(claims.get("name") or claims.get("preferred_username") or "") or None,
        )

    async def _finish_github(self, client: Any, request: Request) -> Identity:
        token = await client.authorize_access_token(request)
        user = (await client.get("user", token=token)).json()
        emails = (await client.get("user/emails", token=token)).json()
        orgs: list[dict[str, Any]] = []
        if self.settings.allowlist.wants_github_orgs:
            orgs = (await client.get("user/orgs", token=token)).json()
        return github_identity(user, emails, orgs)


def verified_email(claims: Mapping[str, Any], *, allow_missing: bool = False) -> str | None:
    """The ID token's e-mail, only if the IdP vouches for it; else None (matches no rule).

    An address the user merely typed in at the IdP must not pass an e-mail or domain
    allowlist, so `email_verified` has to be the JSON boolean true: "true"/"false"
    strings, numbers and null do not count. `allow_missing`
    (HERMES_DASHBOARD_OIDC_ALLOW_MISSING_EMAIL_VERIFIED) only covers an absent claim,
    for IdPs that release verified addresses only and never send it.
    """
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    if "email_verified" not in claims:
        return email.strip().lower() if allow_missing else None
    return email.strip().lower() if claims["email_verified"] is True else None


def github_identity(
    user: dict[str, Any], emails: list[dict[str, Any]], orgs: list[dict[str, Any]]
) -> Identity:
    """Map GitHub's /user, /user/emails and /user/orgs answers (only verified emails count)."""
    if not isinstance(user, dict) or not user.get("id") or not user.get("login"):
        raise LoginError("invalid_github_user")
    primary = next(
        (
            e.get("email")
            for e in emails
            if isinstance(e, dict) and e.get("primary") and e.get("verified")
        ),
        None,
    )
    org_names = frozenset(
        str(o["login"]) for o in orgs if isinstance(o, dict) and isinstance(o.get("login"), str)
    )
    return Identity(
        provider="github",
        subject=str(user["id"]),
        email=str(primary).lower() if primary else None,
        name=str(user.get("name") or user["login"]),
        github_login=str(user["login"]),
        github_orgs=org_names,
    )
