"""User-facing errors.

A :class:`LanistrError` is a problem the user can fix (a missing file, a malformed line,
an invalid config value). The CLI prints its message on one line and exits with code 2,
without a traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LanistrError(Exception):
    """An error caused by user input; its message says what to fix."""


class ConfigError(LanistrError, ValueError):
    """An invalid configuration value; the message names the field."""


class DataError(LanistrError, ValueError):
    """A bad input record; the message names the file, line and reason."""

    def __init__(self, path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class CheckpointError(LanistrError):
    """A checkpoint directory that is missing files or does not match its config."""


class TrainingError(LanistrError):
    """Training stopped for a reason the user must act on (e.g. a non-finite loss)."""
