"""What a command prints on stderr: one line each, starting ``avex-hub: ``, warnings included."""

from __future__ import annotations

import contextlib
import sys
import warnings

__all__ = ["say", "error", "one_line", "warnings_as_lines"]


def say(message: str) -> None:
    """A line about the run (what was written, skipped, found)."""
    print(f"avex-hub: {message}", file=sys.stderr)


def error(message: str) -> None:
    """A line about what stopped the command or failed in it."""
    print(f"avex-hub: error: {message}", file=sys.stderr)


def one_line(message) -> str:
    """A warning's message on one line (its line breaks and runs of spaces made single spaces)."""
    return " ".join(str(message).split())


def _format(message, category, filename, lineno, line=None) -> str:
    """Python's display of a warning, as a command prints it: the message alone (Python's default adds the file, the
    line number and the ``warnings.warn(`` source line of the code that warned)."""
    return f"avex-hub: warning: {one_line(message)}\n"


@contextlib.contextmanager
def warnings_as_lines(*notices: type[Warning]):
    """While a command runs, each warning reaches the terminal as one line.

    A warning of a ``notices`` category (what a command found and did, such as agile's ``ArchiveNotice``) is a line
    of the command's own output, ``avex-hub: MESSAGE``, shown every time it is given, even where warnings are being
    recorded. Any other warning goes on to Python's display as ``avex-hub: warning: MESSAGE``: a caller that records
    warnings (``warnings.catch_warnings(record=True)``, ``pytest.warns``) still receives it, and decoding workers
    (forked while this holds) print it the same way. ``warnings.showwarning`` and ``warnings.formatwarning`` are
    set on entry and restored on exit: importing the package changes nothing, and a program that calls ``main``
    keeps its own display. Nested, the inner one adds its notices for its duration."""
    shown_before, format_before = warnings.showwarning, warnings.formatwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if notices and issubclass(category, notices):
            say(one_line(message))
        else:
            shown_before(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():  # the filters and showwarning, restored on exit
        for category in notices:
            warnings.simplefilter("always", category)
        warnings.showwarning, warnings.formatwarning = show, _format
        try:
            yield
        finally:
            warnings.formatwarning = format_before
