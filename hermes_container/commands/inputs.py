"""What commands read from the person at the terminal, or from stdin in a script.

A secret is read with getpass on a terminal (never echoed), else as the one line on
stdin; a persona from a UTF-8 file. Bad input is a UsageError (exit 2), raised before
the command changes anything.
"""

from __future__ import annotations

import sys

from hermes_container.errors import UsageError


def read_secret_line(what: str) -> str:
    """One non-empty line: through getpass on a terminal, else all of stdin."""
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(f"{what} (input hidden): ")
    else:
        value = sys.stdin.read()
        value = value.removesuffix("\n").removesuffix("\r")
    if "\n" in value or "\r" in value:
        raise UsageError(f"expected one line on stdin for {what}")
    value = value.strip()
    if not value:
        raise UsageError(f"refusing an empty value for {what}")
    return value


def ask_secret(prompt: str) -> str:
    """One answer that is never echoed (getpass) on a terminal; else the next line of
    stdin (a script answering the questions). May be empty; EOF is a UsageError."""
    if sys.stdin.isatty():
        import getpass

        try:
            return getpass.getpass(f"{prompt}: ").strip()
        except EOFError:
            raise UsageError(f"no answer for: {prompt}") from None
    print(f"{prompt}: ", end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"no answer for: {prompt}")
    return line.strip()


def read_persona(path: str) -> str:
    """The persona (SOUL.md) text from file `path`."""
    from hermes_container.fsutil import UnreadableText, read_small_text
    from hermes_container.home import SOUL_MAX_BYTES

    try:
        text = read_small_text(path, SOUL_MAX_BYTES)
    except UnreadableText as exc:
        raise UsageError(f"persona file {path}: {exc}") from None
    if not text.strip():
        raise UsageError(f"persona file {path} is empty")
    return text if text.endswith("\n") else text + "\n"


def ask(prompt: str, default: str | None = None) -> str:
    """One answer (the default for an empty one); EOF is a UsageError."""
    shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
    try:
        answer = input(shown).strip()
    except EOFError:
        raise UsageError(f"no answer for: {prompt}") from None
    return answer or (default or "")
