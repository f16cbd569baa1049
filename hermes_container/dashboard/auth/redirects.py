"""`next=` targets: same-site relative paths only, and only pages we actually serve."""

from __future__ import annotations

import re
from urllib.parse import quote

# A canonical path on this site: no scheme, host, `//`, backslash, dot segments or encoding.
_SAFE_NEXT = re.compile(r"/|(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,254}){1,16}")


def safe_next(value: str | None) -> str:
    """`value` if it is a plain same-site path outside /auth/, else `/`."""
    if not value or len(value) > 1024 or not _SAFE_NEXT.fullmatch(value):
        return "/"
    if value.startswith(("/auth/", "/api/", "/static/")) or value == "/login":
        return "/"
    return value


def login_url(next_path: str | None, *, expired: bool = False) -> str:
    url = "/login?next=" + quote(safe_next(next_path), safe="/")
    return url + "&expired=1" if expired else url
