"""A profile's gateway key (API_SERVER_KEY in its .env): replace it with a new one.

The dashboard's "Rotate key" calls this, and a CLI command can: the new key is written
through config_edit (the .env rewritten atomically, mode 600, under the profile's lock),
then handed back to the caller, the one place that may show it. Nothing here logs or
keeps it. The running gateway goes on accepting the old key until it reloads
(supervision/reload.py); the ingress notices the changed .env by itself.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hermes_container.home import HermesHome

API_KEY_NAME = "API_SERVER_KEY"


def rotate_api_key(home: HermesHome, profile: str) -> str:
    """Store a fresh API_SERVER_KEY for `profile` and return it; HermesError (one line)
    for a profile that does not exist or a .env that cannot be written."""
    from hermes_container.config_edit import set_secret
    from hermes_container.profiles import new_api_key

    key = new_api_key()
    set_secret(home, profile, API_KEY_NAME, key)
    return key


__all__ = ["API_KEY_NAME", "rotate_api_key"]
