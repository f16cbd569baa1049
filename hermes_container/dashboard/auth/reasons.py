"""The fixed vocabulary of login failure reasons that may reach the audit log.

A failed login's reason can come from outside: authlib turns the callback's
`?error=` query parameter (sent by the IdP, or typed by anyone) and the token
endpoint's `error` field into the exception we see. Writing that text would let an
unauthenticated client put words of its choice into the audit log, so every reason is
mapped onto this closed set; anything else becomes `idp_error`.
"""

from __future__ import annotations

UNKNOWN = "idp_error"
INVALID_RESPONSE = "invalid_response"

# Raised by our own provider code (providers.py).
_OWN = frozenset(
    {
        "unknown_provider",
        "provider_unreachable",
        "issuer_mismatch",
        "no_id_token",
        "invalid_github_user",
        "oauth_error",
        # the login token (routes.token_login)
        "bad_token",
        "rate_limited",
        # the basic login (routes.basic_login)
        "bad_password",
    }
)

# OAuth 2.0 (RFC 6749 4.1.2.1 and 5.2) and OpenID Connect Core (3.1.2.6) error codes,
# plus the client-side errors authlib raises itself.
_PROTOCOL = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "invalid_client",
        "invalid_grant",
        "unsupported_grant_type",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
        "mismatching_state",
        "missing_token",
        "missing_code_verifier",
    }
)

# `invalid_response:<exception class>`: what a malformed provider answer raised in our
# process (token validation, HTTP, JSON). Only these names are kept verbatim.
_EXCEPTIONS = frozenset(
    {
        "InvalidClaimError",
        "MissingClaimError",
        "ExpiredTokenError",
        "InvalidTokenError",
        "BadSignatureError",
        "DecodeError",
        "InvalidKeyIdError",
        "UnsupportedAlgorithmError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "ReadError",
        "RemoteProtocolError",
        "HTTPStatusError",
        "JSONDecodeError",
        "KeyError",
        "TypeError",
        "ValueError",
    }
)

KNOWN: frozenset[str] = _OWN | _PROTOCOL


def reason_code(reason: object) -> str:
    """`reason` if it belongs to the fixed set, else a fixed stand-in for it."""
    if not isinstance(reason, str):
        return UNKNOWN
    if reason in KNOWN:
        return reason
    prefix, sep, name = reason.partition(":")
    if sep and prefix == INVALID_RESPONSE:
        return reason if name in _EXCEPTIONS else INVALID_RESPONSE
    return UNKNOWN
