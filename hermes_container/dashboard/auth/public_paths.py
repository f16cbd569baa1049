"""The one allowlist of paths reachable without authentication, shared by both gates.

Both the loopback token middleware and the OAuth gate import this module. A path is
public only when the request target is already canonical: the raw bytes on the wire
equal the decoded path (no percent-encoding at all), every segment is non-empty,
made of `[A-Za-z0-9._~-]` and does not start with a dot (so no `.`/`..`, no `//`,
no `;params`, no NUL, no trailing slash). Anything else is treated as gated, which
is safe because a gated request only costs the client a 401 or a login redirect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Read-only endpoints that reveal nothing sensitive (see the /api/status docstring).
PUBLIC_API_PATHS: frozenset[str] = frozenset({"/api/status", "/api/auth/providers"})

# Pages needed to log in at all.
PUBLIC_PAGE_PATHS: frozenset[str] = frozenset({"/login"})

# Auth bootstrap and static assets; matched on a segment boundary, never as a bare prefix.
PUBLIC_PREFIXES: tuple[str, ...] = ("/auth/", "/static/")

# Pages that carry the loopback session token themselves (token mode only).
_PAGE = re.compile(
    r"/|/login|/kanban|/jobs|/events|/playground|/sessions|/logs/boot|/logs/audit|/profiles/[a-z0-9][a-z0-9_-]{0,62}"
)

_CANONICAL = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,254}){1,32}")


def canonical_path(scope: Mapping[str, Any]) -> str | None:
    """The request path if it is unambiguous, else None (which every caller denies)."""
    path = scope.get("path")
    if not isinstance(path, str) or scope.get("root_path"):
        return None
    raw = scope.get("raw_path")
    if raw is not None and (not isinstance(raw, bytes) or raw != path.encode("latin-1", "replace")):
        return None
    if path == "/" or _CANONICAL.fullmatch(path):
        return path
    return None


def is_public_path(path: str | None) -> bool:
    """True only for an exact allowlisted path or a file under a bootstrap prefix."""
    if path is None:
        return False
    if path in PUBLIC_API_PATHS or path in PUBLIC_PAGE_PATHS:
        return True
    return any(path.startswith(prefix) and len(path) > len(prefix) for prefix in PUBLIC_PREFIXES)


def is_public(scope: Mapping[str, Any]) -> bool:
    return is_public_path(canonical_path(scope))


def is_token_page(scope: Mapping[str, Any]) -> bool:
    """A GET page the loopback mode serves without the header (it injects the token)."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    path = canonical_path(scope)
    return path is not None and _PAGE.fullmatch(path) is not None


def is_api_path(scope: Mapping[str, Any]) -> bool:
    """Whether a denied request should get JSON (401) rather than a login redirect.

    Deliberately loose: any path that mentions `api` as a segment after collapsing
    slashes and case, so `//API/x` gets JSON too. It only chooses the error shape.
    """
    path = scope.get("path")
    if not isinstance(path, str):
        return True
    segments = [s for s in path.lower().replace("\\", "/").split("/") if s]
    return bool(segments) and segments[0].startswith("api")
