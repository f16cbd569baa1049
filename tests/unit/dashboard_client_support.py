"""An in-process dashboard in loopback token mode, driven as its own page's scripts drive
it: the session token on every request, the page's CSRF token on every write; and the
one-line error every refusal must be."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from starlette.testclient import TestClient

LOCAL = "http://127.0.0.1:9119"


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token a page of the dashboard carries for its scripts."""
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)


@contextlib.contextmanager
def page_client(
    app: Any, token: str, page: str, on_response: Callable[[httpx.Response], None]
) -> Iterator[TestClient]:
    """A client signed in with `token` that loaded `page` and took its CSRF token;
    `on_response` sees every answer, that page's included."""
    with TestClient(app, base_url=LOCAL, follow_redirects=False) as client:
        client.event_hooks["response"] = [on_response]
        client.headers["X-Hermes-Session-Token"] = token
        loaded = client.get(page)
        assert loaded.status_code == 200, loaded.text
        client.headers["X-CSRF-Token"] = csrf_of(loaded)
        yield client


def one_line_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """Assert `response` is the refusal `status` (with error `code`) told in one line;
    its detail."""
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"], body
    assert "\n" not in body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return str(body["detail"])
