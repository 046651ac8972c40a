"""One exception hierarchy for every user-facing mistake.

The CLI maps ``AtssBenchError`` to a single red line (message + hint) and exit code 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class AtssBenchError(Exception):
    """Base class: a user-facing error with an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(AtssBenchError):
    """A recipe, profile or override is malformed or names an unknown key."""


class DataError(AtssBenchError):
    """A dataset is missing or malformed."""


class StoreError(AtssBenchError):
    """The results store is unreadable or a record is malformed."""


class TrainingError(AtssBenchError):
    """A run failed (non-finite loss, bad checkpoint, ...)."""


class LaunchError(AtssBenchError):
    """A job could not be scheduled or its cluster is unavailable."""
