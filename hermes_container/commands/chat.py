"""`hermes [-p P] chat "message"`: ask the profile's own gateway, print the reply.

Stdlib only (urllib), so it starts fast inside `docker exec`. It always talks to
127.0.0.1:<port> with the profile's API_SERVER_KEY and ignores HTTP proxy settings.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("chat", help="send one message to the profile's gateway")
    parser.add_argument("message", help="the user message")
    parser.add_argument("--session", help="session id to record the exchange under")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    parser.set_defaults(handler=_chat)


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:300] or "no detail"


def _chat(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from hermes_container.config import read_port
    from hermes_container.errors import ConfigError, HermesError, UsageError
    from hermes_container.gateway.profile_settings import read_api_key
    from hermes_container.home import HermesHome
    from hermes_container.names import validate_profile_name
    from hermes_container.profiles import require_profile

    if not 0 < args.timeout < float("inf"):  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    name = validate_profile_name(args.profile)
    profile_dir = require_profile(HermesHome.from_env(), name)
    port = read_port(profile_dir)  # load_config(...).port, without loading PyYAML
    if port is None:
        raise ConfigError(f"profile {name!r} has no valid gateway.port in its config.yaml")
    headers = {
        "authorization": f"Bearer {read_api_key(profile_dir)}",
        "content-type": "application/json",
    }
    if args.session:
        headers["x-hermes-session"] = args.session
    body = {"messages": [{"role": "user", "content": args.message}], "stream": False}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    # An empty ProxyHandler: loopback must never go through $http_proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=args.timeout) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise HermesError(
            f"gateway answered HTTP {exc.code}: {_error_message(exc.read())}"
        ) from None
    except (urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HermesError(
            f"the gateway of profile {name!r} is not reachable on 127.0.0.1:{port} ({reason}); "
            f"start it with `hermes -p {name} gateway start`"
        ) from None
    except TimeoutError:
        raise HermesError(f"no reply from the gateway within {args.timeout:g}s") from None
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise HermesError("the gateway's reply has no message content") from None
    print(text)
    return 0
