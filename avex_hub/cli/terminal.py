"""What a command prints on stderr: one line each, starting ``avex-hub: ``."""

from __future__ import annotations

import sys

__all__ = ["say", "error"]


def say(message: str) -> None:
    """A line about the run (what was written, skipped, found)."""
    print(f"avex-hub: {message}", file=sys.stderr)


def error(message: str) -> None:
    """A line about what stopped the command or failed in it."""
    print(f"avex-hub: error: {message}", file=sys.stderr)
