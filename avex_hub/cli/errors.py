"""How a command ends: its exit code, by name, and the errors that carry one.

The numbers are the documented ones (README, ``avex-hub --help``) and never change; code names them.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "UsageError", "CommandError"]


class ExitCode(IntEnum):
    """The exit code of ``avex-hub``; ``main`` returns one."""

    OK = 0  # the command did all it was asked
    ERROR = 1  # an error stopped it (weights unavailable, a damaged file, a failed write): finished files are kept
    USAGE = 2  # bad arguments or inputs, found before any work where they can be
    PARTIAL = 3  # some inputs could not be read; every other input was written, the failures are listed
    BUSY = 4  # an agile archive is being written by another process; nothing was changed
    INTERRUPTED = 130  # Ctrl-C; files already finished are kept


class CommandError(Exception):
    """A command stopped: ``avex-hub: error: MESSAGE`` on one line and ``code`` as the exit code."""

    code = ExitCode.ERROR

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CommandError):
    """Bad arguments or inputs (exit code 2), raised by any command; found before any work where they can be."""

    code = ExitCode.USAGE
