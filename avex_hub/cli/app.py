"""The ``avex-hub`` parser, made of each command family's parsers, and ``main``, which runs one command and turns
what stopped it into one line and an exit code."""

from __future__ import annotations

import argparse
from typing import NoReturn

from . import agile, benchmark, export, inference, monitoring, options, scale, terminal, weights
from .errors import CommandError, ExitCode

__all__ = ["build_parser", "main"]

# Each family: COMMANDS (its subcommands), add_parsers(sub) and run(args) -> ExitCode, in the order of --help
FAMILIES = (inference, weights, export, agile, benchmark, monitoring, scale)

DESCRIPTION = ("avex-hub: embed or classify folders of recordings, agile modelling, monitoring outputs, benchmarks; "
               "inspect, download, verify and export the weights; merge the outputs of sharded runs.")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors name unrecognized options but never echo a value (one may be
    ``--storage-options`` JSON holding credentials); its subparsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        head, found, rest = message.partition("unrecognized arguments: ")
        if found:
            given = rest.split(" ")
            names = [word.split("=", 1)[0] for word in given if word.startswith("-")]
            hidden = len(names) < len(given) or any("=" in word for word in given if word.startswith("-"))
            message = head + found + (" ".join(names) or "values") + (" (values not shown: they may hold "
                                                                      "credentials)" if hidden else "")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per command."""
    parser = _Parser(prog="avex-hub", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="exit codes: " + ", ".join(f"{int(code)} {code.name.lower()}" for code in ExitCode))
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (:class:`avex_hub.cli.errors.ExitCode`). While it runs, warnings
    print as one line each (:func:`avex_hub.cli.terminal.warnings_as_lines`); Python's display is restored when it
    returns, so a program or test that calls it keeps its own."""
    with terminal.warnings_as_lines():
        return _command(argv)


def _command(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return ExitCode(exit_.code or 0)
    family = next(f for f in FAMILIES if args.command in f.COMMANDS)
    try:
        if not getattr(family, "STORES", False):  # the families whose --out may be a URL say so
            options.local_only(args)
        return family.run(args)
    except CommandError as error:
        from ..storage.locations import redact  # a message that quotes what the user gave holds no URL's secret

        terminal.error(redact(str(error)))
        return error.code
    except KeyboardInterrupt:
        terminal.error("interrupted; files already finished are kept, run the same command again to continue")
        return ExitCode.INTERRUPTED
