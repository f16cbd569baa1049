"""`hermes [-p P] setup [--non-interactive --base-url URL --model M --api-key-stdin]`.

Points a profile at a model provider: the provider's URL, a model from its list
(`GET /models`), its key (never echoed), checked with one chat completion of one token
before anything is written; then config.yaml and .env (each atomically, checked as the
gateway checks them) and the gateway is started, or asked to reload if it runs. A
profile named with -p that does not exist yet is created with these settings.
"""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hermes_container.home import HermesHome

URL_TRIES = 3
START_TIMEOUT_S = 15.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "setup", help="point a profile at a model provider, check the key, start its gateway"
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="ask nothing: take --base-url, --model and --api-key-stdin",
    )
    parser.add_argument("--base-url", metavar="URL", help="the provider's OpenAI-compatible URL")
    parser.add_argument("--model", metavar="M", help="the model to use")
    parser.add_argument(
        "--api-key-stdin", action="store_true", help="read the provider's key from stdin"
    )
    parser.set_defaults(handler=_setup)


class _Current:
    """What the profile has now: the defaults of the questions."""

    def __init__(self, home: HermesHome, profile: str, exists: bool) -> None:
        from hermes_container.config import load_config
        from hermes_container.envfile import read_env
        from hermes_container.errors import HermesError
        from hermes_container.home import ENV_FILE

        self.base_url: str | None = None
        self.model: str | None = None
        self.api_key = ""
        if not exists:
            return
        directory = home.profile_dir(profile)
        try:
            model = load_config(directory).raw.get("model")
        except HermesError:
            model = None  # a broken file: setup is how it gets fixed
        if isinstance(model, dict):
            url, name = model.get("base_url"), model.get("name")
            self.base_url = url if isinstance(url, str) else None
            self.model = name if isinstance(name, str) else None
        self.api_key = read_env(directory / ENV_FILE).get("HERMES_MODEL_API_KEY", "").strip()


def _checked(name: str, value: str) -> Any:
    from hermes_container.config_schema import KEYS, parse_text
    from hermes_container.errors import ConfigError, UsageError

    try:
        return parse_text(KEYS[name], value)
    except ConfigError as exc:
        raise UsageError(exc.message) from None


def _ask_url(current: _Current) -> str:
    from hermes_container.commands.inputs import ask
    from hermes_container.config import DEFAULT_BASE_URL
    from hermes_container.errors import UsageError

    for _ in range(URL_TRIES):
        answer = ask("Provider URL (OpenAI-compatible)", current.base_url or DEFAULT_BASE_URL)
        try:
            url: str = _checked("model.base_url", answer)
            return url
        except UsageError as exc:
            print(f"  {exc.message}", file=sys.stderr)
    raise UsageError(f"no valid provider URL after {URL_TRIES} tries")


def _ask_model(models: list[str], current: _Current) -> str:
    from hermes_container.commands.inputs import ask

    if models:
        print("Models of this provider:")
        for number, name in enumerate(models, 1):
            print(f"  {number:>3}  {name}")
    default = current.model if current.model in models or not models else models[0]
    answer = ask("Model (number or name)", default)
    if answer.isdigit() and models:
        index = int(answer)
        if not 1 <= index <= len(models):
            from hermes_container.errors import UsageError

            raise UsageError(f"no model number {index} (1-{len(models)})")
        return models[index - 1]
    model: str = _checked("model.name", answer)
    return model


def _models(url: str, key: str | None) -> tuple[list[str], str | None]:
    """The provider's models, asking for the key first when listing needs one; a
    provider that cannot list them leaves the name to be typed."""
    from hermes_container.commands.inputs import ask_secret
    from hermes_container.errors import HermesError
    from hermes_container.provider import KeyRefused, list_models

    try:
        try:
            return list_models(url, key), key
        except KeyRefused:
            if key is not None:
                raise
        key = ask_secret("The provider wants a key to list its models. API key")
        return list_models(url, key or None), key
    except KeyRefused:
        raise  # a wrong key ends setup: nothing is written
    except HermesError as exc:
        print(f"  cannot list models ({exc.message}); type the model's name", file=sys.stderr)
        return [], key


def _setup(args: argparse.Namespace) -> int:
    from hermes_container.commands.inputs import ask_secret, read_secret_line
    from hermes_container.config_schema import mask_userinfo
    from hermes_container.errors import UsageError
    from hermes_container.home import HermesHome
    from hermes_container.names import validate_profile_name
    from hermes_container.profiles import profile_exists
    from hermes_container.provider import check_key

    home = HermesHome.from_env()
    profile = validate_profile_name(args.profile)
    if args.non_interactive and (args.base_url is None or args.model is None):
        raise UsageError("--non-interactive needs --base-url and --model")
    if args.api_key_stdin and not args.non_interactive:
        raise UsageError("--api-key-stdin needs --non-interactive (stdin answers the questions)")
    exists = profile_exists(home, profile)
    current = _Current(home, profile, exists)
    # Flags are checked before any question or request.
    url = None if args.base_url is None else _checked("model.base_url", args.base_url)
    model = None if args.model is None else _checked("model.name", args.model)
    key: str | None = read_secret_line("the provider's API key") if args.api_key_stdin else None
    if not exists:
        print(f"Profile {profile!r} does not exist yet: setup creates it")
    if url is None:
        url = _ask_url(current)
    if model is None:
        models, key = _models(url, key)
        model = _ask_model(models, current)
    if key is None and not args.non_interactive:
        keep = "keep the current one" if current.api_key else "none"
        key = ask_secret(f"Provider API key (input hidden; empty: {keep})")
    key = key or current.api_key or None
    print(f"Checking {model!r} at {mask_userinfo(url)} with one request...")
    check_key(url, key, model)
    print("The provider answered.")
    _write(home, profile, exists, url, model, key, current)
    return _start(home, profile)


def _write(
    home: HermesHome,
    profile: str,
    exists: bool,
    url: str,
    model: str,
    key: str | None,
    current: _Current,
) -> None:
    from hermes_container.config_edit import set_values
    from hermes_container.profiles import create_profile, ensure_default_profile

    if not exists:
        path = create_profile(home, profile, base_url=url, model=model, model_api_key=key)
        print(f"Created profile {profile!r} at {path}")
        return
    if profile == "default":
        ensure_default_profile(home)
    secrets = {"HERMES_MODEL_API_KEY": key} if key and key != current.api_key else None
    change = set_values(
        home, profile, {"model.base_url": url, "model.name": model}, secrets=secrets
    )
    changed = ", ".join(change.changed) or "nothing (it already had these settings)"
    print(f"Saved profile {profile!r}: changed {changed}")


def _start(home: HermesHome, profile: str) -> int:
    """Start the gateway as `hermes gateway start` does, or reload it if it runs."""
    from hermes_container.supervision import get_manager
    from hermes_container.supervision.reload import reload_and_wait

    manager = get_manager(home)
    if manager is None or manager.status(profile).up:
        answer = reload_and_wait(home, profile)
        if answer.applied:  # a running gateway (supervised, or one in the foreground)
            print(f"Gateway {profile!r} reloaded: new requests use the new settings")
            return 0
        if manager is not None or answer.sent:
            print(f"Gateway {profile!r}: {answer.detail}")
            return 1
        from hermes_container.events.desired import set_desired

        set_desired(home, profile, "running")
        print(
            "No supervised tree is running: the gateway starts with it "
            "(`hermes supervise`, or the container)"
        )
        return 0
    from hermes_container.supervision.control import act, reached

    status = act(manager, "start", [profile], START_TIMEOUT_S)[0]
    if reached("start", status):
        print(f"Gateway {profile!r} is running: pid {status.pid}, port {status.port}")
        print(f"Try it: hermes -p {profile} chat 'Hello'")
        return 0
    print(f"Gateway {profile!r} is not ready: {status.exit_reason or 'see `hermes logs`'}")
    return 1
