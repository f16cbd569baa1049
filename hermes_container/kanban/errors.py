"""Board errors: one line each, through the CLI's HermesError handling."""

from __future__ import annotations

from hermes_container.errors import EXIT_FAILURE, HermesError, UsageError


class NotFound(UsageError):
    """No such task, run or board."""


class InvalidTransition(HermesError):
    """The task's status does not allow this operation; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILURE)


class NotHolder(HermesError):
    """The caller does not hold the task's current run; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILURE)


class StoreUnavailable(HermesError):
    """The database cannot be opened or stayed busy past the retry deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_FAILURE)
