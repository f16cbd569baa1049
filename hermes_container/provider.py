"""Ask a model provider, before a profile uses it, which models it has and whether a key
works: `hermes setup` (and anything else that sets a profile up) calls these.

httpx, the kept client, is imported here only when a provider is asked; it follows the
environment's proxy variables as the gateway does. Failures are one-line HermesErrors
that never carry the key: exit 2 when the provider refuses what it was given (the key,
the model: bad input), exit 1 when it cannot be reached or fails itself.
"""

from __future__ import annotations

from hermes_container.config_schema import redact_url
from hermes_container.errors import EXIT_FAILURE, EXIT_USAGE, HermesError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import httpx

CONNECT_TIMEOUT_S = 5.0
MODELS_TIMEOUT_S = 15.0
CHECK_TIMEOUT_S = 60.0  # one completion of one token, but a cold model may load first
CHECK_PROMPT = "Reply with one word."
MAX_DETAIL = 200


class KeyRefused(HermesError):
    """The provider answered 401/403: the key is wrong, missing or not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def _client(timeout: float) -> httpx.Client:
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))


def _headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def _detail(response: httpx.Response, api_key: str | None) -> str:
    """The provider's own error message, on one line, short, with the key masked."""
    try:
        body: Any = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        text = message if isinstance(message, str) else ""
    except ValueError:
        text = ""
    text = " ".join(text.split())
    if api_key:
        text = text.replace(api_key, "***")
    if len(text) > MAX_DETAIL:
        text = text[:MAX_DETAIL] + "..."
    return f": {text}" if text else ""


def _unreachable(base_url: str, exc: Exception) -> HermesError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return HermesError(f"cannot reach the provider at {redact_url(base_url)}: {reason}")


def _refused(what: str, response: httpx.Response, api_key: str | None) -> HermesError:
    status = response.status_code
    detail = _detail(response, api_key)
    if status in (401, 403):
        hint = "the provider refused the key" if api_key else "the provider wants a key"
        return KeyRefused(f"{hint} (HTTP {status} on {what}){detail}")
    code = EXIT_USAGE if 400 <= status < 500 else EXIT_FAILURE
    return HermesError(f"the provider answered HTTP {status} on {what}{detail}", code)


def list_models(base_url: str, api_key: str | None = None) -> list[str]:
    """The ids of `GET <base_url>/models`, sorted."""
    import httpx

    try:
        with _client(MODELS_TIMEOUT_S) as client:
            response = client.get(base_url.rstrip("/") + "/models", headers=_headers(api_key))
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from None
    if not response.is_success:
        raise _refused("/models", response, api_key)
    try:
        body = response.json()
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise TypeError("no list of models")
        ids = {item["id"] for item in items if isinstance(item.get("id"), str)}
    except (ValueError, TypeError, AttributeError, KeyError):
        where = redact_url(base_url)
        raise HermesError(f"{where}/models did not answer with a model list") from None
    return sorted(ids)


def check_key(base_url: str, api_key: str | None, model: str) -> None:
    """One chat completion of at most one token: raises unless the provider answers it."""
    import httpx

    body = {
        "model": model,
        "messages": [{"role": "user", "content": CHECK_PROMPT}],
        "max_tokens": 1,
    }
    url = base_url.rstrip("/") + "/chat/completions"
    try:
        with _client(CHECK_TIMEOUT_S) as client:
            response = client.post(url, json=body, headers=_headers(api_key))
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from None
    if not response.is_success:
        raise _refused(f"a chat completion with model {model!r}", response, api_key)
