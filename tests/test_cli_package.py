"""The command line's shape (issue 22 part 4), read from its parsers and source: an option has one declaration and
one meaning across commands, exit codes have names and keep their documented numbers, warnings reach the terminal
as one line each while a command runs (and only then), and --no-progress keeps every run's summary."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

import avex_hub.cli as cli
from avex_hub.cli import ExitCode, UsageError, main, options
from conftest import FIXTURE

CLI_DIR = Path(cli.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, argparse.ArgumentParser]:
    return cli.build_parser()._subparsers._group_actions[0].choices


def _options_by_name() -> dict[str, dict[str, argparse.Action]]:
    """``{option string: {command: its action}}`` over every command's parser (--help left out)."""
    found: dict[str, dict[str, argparse.Action]] = defaultdict(dict)
    for command, parser in _commands().items():
        for action in parser._actions:
            for name in action.option_strings:
                if not isinstance(action, argparse._HelpAction):
                    found[name][command] = action
    return found


def test_an_option_that_several_commands_take_is_the_one_declaration():
    """Every option more than one command takes comes from options.declarations(), and parses the same way in each
    (its destination, type, action, number of values); a command may only word its help or set its default. Before
    the package, --batch-size was int in embed, "int > 0" in index; --species a path in scores, text in classify;
    --model had no choices in scores."""
    declared = options.declarations()
    shared = {name: by_command for name, by_command in _options_by_name().items() if len(by_command) > 1}
    assert sorted(set(shared) - set(declared)) == []
    for name, by_command in shared.items():
        meanings = {command: (a.dest, a.type, type(a), a.nargs, a.const) for command, a in by_command.items()}
        assert len(set(meanings.values())) == 1, (name, meanings)
        one = next(iter(by_command.values()))
        assert one.type is declared[name].get("type") and one.dest == name[2:].replace("-", "_"), name
    # the shared options, as the issue names them, are among those declared once
    for name in ("--model", "--checkpoint", "--device", "--batch-size", "--workers", "--precision", "--out",
                 "--no-progress"):
        assert len(shared[name]) >= 3, name


def test_no_option_is_declared_twice_in_the_source():
    """An option string is given to add_argument in one place of avex_hub/cli/ (the shared ones in options.py)."""
    calls: dict[str, list[str]] = defaultdict(list)
    for path in sorted(CLI_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
                        calls[arg.value].append(f"{path.name}:{node.lineno}")
    assert {name: where for name, where in calls.items() if len(where) > 1} == {}
    # options.py declares through one add_argument call fed by declarations()
    assert not any(where[0].startswith("options.py") for where in calls.values())


def test_one_name_per_option_index_takes_layers_as_embed_does(tmp_path, capsys):
    """index --layers (one layer) where embed and benchmark take --layers: the old name --layer is gone."""
    parse = cli.build_parser().parse_args
    assert parse(["index", "in", "--db", "db", "--layers", "6"]).layers == 6
    assert parse(["index", "in", "--db", "db"]).layers == -1
    assert main(["index", "in", "--db", str(tmp_path / "db"), "--layer", "6"]) == ExitCode.USAGE
    assert "unrecognized arguments: --layer (values not shown" in capsys.readouterr().err
    pytest.importorskip("perch_hoplite")
    assert main(["index", str(tmp_path), "--db", str(tmp_path / "db"), "--layers", "1,-1",
                 "--checkpoint", str(FIXTURE)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err == ("avex-hub: error: --layers 1,-1: index stores one layer per window; give one layer index, e.g. "
                   "--layers 6 (-1 is the last)\n")
    assert not (tmp_path / "db").exists()  # refused before the weights load or the archive is made


def test_exit_codes_have_names_and_keep_their_documented_numbers():
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "PARTIAL": 3, "BUSY": 4, "INTERRUPTED": 130}
    assert (cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_PARTIAL, cli.EXIT_BUSY, cli.EXIT_INTERRUPTED) == \
        tuple(ExitCode)
    assert UsageError("x").code is ExitCode.USAGE
    epilog = cli.build_parser().epilog
    assert epilog == "exit codes: 0 ok, 1 error, 2 usage, 3 partial, 4 busy, 130 interrupted"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`avex_hub.cli.ExitCode`" in readme
    for code in ExitCode:
        assert f"{int(code)} {code.name.lower()}" in readme.split("### Exit codes")[1].split("\n#")[0], code
    # no command returns a bare number: every return of an int constant in the package is a named code
    bare = [f"{path.name}:{node.lineno}" for path in sorted(CLI_DIR.glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
            and type(node.value.value) is int]
    assert bare == []


def test_commands_raise_the_package_s_usage_error_and_take_no_exception_class():
    """Every family's run takes the parsed arguments alone (it took the CLI's UsageError class as an argument)."""
    import inspect

    from avex_hub.cli import app

    for family in app.FAMILIES:
        assert list(inspect.signature(family.run).parameters) == ["args"], family.__name__


WARNING_RUN = """
import sys, warnings
import avex_hub.cli.weights as weights
from avex_hub.cli import main

def run(args):
    warnings.warn("first line\\n    second   line", UserWarning)
    warnings.warn("a deprecation, shown to users as any other", FutureWarning)
    return 0

print(warnings.showwarning.__module__, warnings.formatwarning.__module__)  # after import: Python's own
weights.run = run
code = main(["info"])
print(warnings.showwarning.__module__, warnings.formatwarning.__module__, int(code))  # restored after the run
"""


def test_a_warning_reaches_the_terminal_as_one_readable_line():
    """In a real process (no test harness recording warnings): each warning a command gives is one line, the message
    alone, its line breaks joined (Python's format printed the file, the line number and the ``warnings.warn(``
    source line); nothing changes at import and Python's display is back after the run."""
    run = subprocess.run([sys.executable, "-c", WARNING_RUN], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["warnings warnings", "warnings warnings 0"]
    assert run.stderr.splitlines() == ["avex-hub: warning: first line second line",
                                       "avex-hub: warning: a deprecation, shown to users as any other"]


class Notice(UserWarning):
    """A stand-in for a command's notices (agile's ArchiveNotice)."""


def test_notices_are_output_lines_and_other_warnings_still_reach_a_recorder(capsys):
    """Within warnings_as_lines(Notice), a Notice is printed as ``avex-hub: MESSAGE`` each time, even where warnings
    are recorded; any other warning goes on to the recorder (pytest.warns, catch_warnings(record=True)) untouched. The
    display is restored on exit, nested or not."""
    from avex_hub.cli import terminal

    before = (warnings.showwarning, warnings.formatwarning)
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        with terminal.warnings_as_lines():
            with terminal.warnings_as_lines(Notice):
                for _ in range(2):
                    warnings.warn("repaired: 2 windows\nwithout vectors", Notice)
                warnings.warn("a plain warning", UserWarning)
            warnings.warn("outside the inner one", Notice)
    assert capsys.readouterr().err == "avex-hub: repaired: 2 windows without vectors\n" * 2
    assert [(w.category, str(w.message)) for w in recorded] == [(UserWarning, "a plain warning"),
                                                               (Notice, "outside the inner one")]
    assert (warnings.showwarning, warnings.formatwarning) == before


@pytest.mark.parametrize("module", ["avex_hub", "avex_hub.cli"])
def test_python_dash_m_runs_the_command_line(module):
    """``python -m avex_hub`` and ``python -m avex_hub.cli`` are the avex-hub script; importing either module runs
    nothing (the docs' API page and tests walk every module)."""
    run = subprocess.run([sys.executable, "-m", module, "download", "no_such_model"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == ExitCode.USAGE and run.stderr.startswith("avex-hub: error: "), run.stderr
    imported = subprocess.run([sys.executable, "-c", f"import {module}.__main__"], capture_output=True, text=True,
                              timeout=120)
    assert imported.returncode == 0 and imported.stdout == imported.stderr == ""
