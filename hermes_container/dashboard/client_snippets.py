"""Client snippets for a profile's page: curl and the OpenAI SDK against the profile's
own port, the ingress by model and the ingress by path, ready to copy. Keys appear as a
shell variable (`$HERMES_API_KEY`), never the real key; hosts are checked before they go
into a command line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from hermes_container.config_schema import KEYS, dig
from hermes_container.errors import HermesError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hermes_container.home import HermesHome

_HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
KEY_VARIABLE = "HERMES_API_KEY"


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    note: str
    text: str


def safe_host(host: str | None) -> str:
    """A host name fit to paste into a shell command; `localhost` for anything else."""
    if host and _HOSTNAME.fullmatch(host):
        return host
    return "localhost"


def gateway_host(home: HermesHome, profile: str, dashboard_host: str) -> str:
    """Where a client reaches the profile's own port: the dashboard's host when the
    gateway listens on every address, else the address it listens on."""
    from hermes_container.config import load_config

    try:
        raw = load_config(home.profile_dir(profile)).raw
    except HermesError:
        raw = {}
    present, value = dig(raw, "gateway.host")
    host = value if present and isinstance(value, str) else None
    host = host or os.environ.get("HERMES_GATEWAY_HOST", "").strip()
    host = host or KEYS["gateway.host"].default
    if host in _WILDCARD_HOSTS:
        return safe_host(dashboard_host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return safe_host(host)


def _curl(base: str, model: str) -> str:
    body = '{"model": "' + model + '", "messages": [{"role": "user", "content": "Hello!"}]}'
    return (
        f"curl {base}/chat/completions \\\n"
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'\n"
    )


def _python(base: str, model: str) -> str:
    return (
        "import os\n\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base}", api_key=os.environ["{KEY_VARIABLE}"])\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )


def client_snippets(
    profile: str, host: str, port: int | None, ingress_port: int, gateway_host_: str
) -> list[Snippet]:
    """curl and the OpenAI Python SDK, against the profile's own port and the ingress.
    The key is always the $HERMES_API_KEY placeholder, never the key itself."""
    ingress = f"http://{safe_host(host)}:{ingress_port}"
    key_note = (
        f"Set {KEY_VARIABLE} to this profile's API key (or the ingress key) first: "
        f"export {KEY_VARIABLE}=..."
    )
    snippets = []
    if port is not None:
        own = f"http://{gateway_host_}:{port}/v1"
        own_note = f"This profile's gateway, port {port}. Its API key only. "
        if gateway_host_ in _LOOPBACK_HOSTS or gateway_host_ == "[::1]":
            own_note += "It listens on loopback: run these where the gateway runs. "
        snippets += [
            Snippet("curl-own", "curl, this profile's port", own_note, _curl(own, profile)),
            Snippet(
                "python-own", "OpenAI SDK, this profile's port", own_note, _python(own, profile)
            ),
        ]
    by_model = f"{ingress}/v1"
    by_path = f"{ingress}/p/{profile}/v1"
    ingress_note = (
        f"The ingress on port {ingress_port}: one port for every profile, chosen by "
        f"model={profile!r}. "
    )
    path_note = "For clients that cannot set the model: the profile is in the path. "
    snippets += [
        Snippet("curl-ingress", "curl, the ingress", ingress_note, _curl(by_model, profile)),
        Snippet(
            "python-ingress", "OpenAI SDK, the ingress", ingress_note, _python(by_model, profile)
        ),
        Snippet(
            "python-path", "OpenAI SDK, the ingress by path", path_note, _python(by_path, profile)
        ),
    ]
    return [Snippet(s.id, s.title, s.note + key_note, s.text) for s in snippets]
