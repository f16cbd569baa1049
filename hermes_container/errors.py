"""The one exception type the CLI turns into a one-line error and an exit code."""

from __future__ import annotations

# Exit codes shared by the CLI, the gateway and the s6 finish scripts.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG: the slot is parked instead of restart-looped
EXIT_PARK = 125  # from a finish script: s6-supervise does not restart the service


class HermesError(Exception):
    """A user-facing failure: `message` is printed as one line, `exit_code` is returned."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(HermesError):
    """Bad input from the user (exit 2, like argparse)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class ConfigError(HermesError):
    """A profile's configuration cannot be used (exit 78, parks a supervised slot)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_CONFIG)
