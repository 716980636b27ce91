#!/usr/bin/env python3
"""Issue 12's layout change as a re-runnable codemod: the flat ``avex_hub/*.py`` become subpackages that show the flow.

    audio -> encoder -> hub (weights) -> embed -> heads -> integrations -> entrypoints / cli

Run from the repository root on a clean checkout of the flat layout:

    python tools/restructure.py            # git mv per MOVES, writes the subpackages' __init__.py, rewrites imports
    python tools/restructure.py --check    # only check the table against the tree (exit status 1 if it misses any)

What it does, in order:
1. Refuses to run unless the tree is the flat layout (no subpackage folder yet) and ``git status`` is clean
   (``--allow-dirty`` to override), and FAILS listing every ``avex_hub/*.py`` that is in neither MOVES nor STAY:
   add a row for it (a new module's room) and run again.
2. Rewrites, in the package, every relative import (``from .x import``, ``from . import x``, function-level ones
   too) to the relative import of the module's new home, and in ``avex_hub/__init__.py`` the lazy tables
   ``_LAZY`` (module names -> their subpackage) and ``_LAZY_NAMES`` (values -> dotted paths).
3. Rewrites everywhere (package, tests, benchmarks, notebooks' JSON, hubconf.py, README.md, docs, .github, ...):
   ``avex_hub.<old>`` -> ``avex_hub.<new>`` (imports, monkeypatch targets, docstrings, ``python -m``),
   ``from avex_hub import <old module>`` -> ``from avex_hub.<package> import <module>``, and the file paths
   ``avex_hub/<old>.py`` -> ``avex_hub/<package>/<module>.py`` (so the LAYERS table of
   tests/test_architecture.py follows), and drops lines marked ``<!-- restructure: remove after applying -->``.
4. ``git mv`` each file, writes the rewritten text at the new path, writes each subpackage's ``__init__.py``
   (a docstring naming the room and lazy access to its modules) and ``git add``s them.

The text rewrite is single-pass, so run it once on a flat tree (it refuses a tree that already has the
subpackages: ``avex_hub.audio`` is both an old module and a new package). ``avex_hub.cli:main`` stays the
console script (cli stays at the top level).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = "avex_hub"

# old top-level module -> new module path inside the package. Add a row for every new flat module.
MOVES: dict[str, str] = {
    # encoder/: BEATs, the filterbank, the user-facing model and the preprocessing contract it carries
    "beats": "encoder.beats",
    "fbank": "encoder.fbank",
    "model": "encoder.model",
    "preprocessing": "encoder.preprocessing",
    "precision": "encoder.precision",  # devices and precision modes the model runs in (the model checks devices)
    # hub/: the weights registry, download -> verify -> strict load, provenance of weights
    "weights": "hub.weights",
    "hub": "hub.loading",
    "provenance": "hub.provenance",
    "integrity": "hub.integrity",
    # audio/: decoding and the channel contract, windows, datasets, augmentations, synthetic data
    "audio": "audio.contract",
    "windows": "audio.windows",
    "data": "audio.datasets",
    "augment": "audio.augment",
    "synthetic": "audio.synthetic",
    # embed/: extraction with caches, file inference, output writers
    "embeddings": "embed.extract",
    "inference": "embed.inference",
    "outputs": "embed.outputs",
    # heads/: probes, probe training, fine-tuning (pure torch), evaluation and metrics
    "probes": "heads.probes",
    "training": "heads.training",
    "finetune": "heads.finetune",
    "evaluation": "heads.evaluation",
    "metrics": "heads.metrics",
    # integrations/: scikit-learn, Lightning (fine-tuning loop, distributed prediction)
    "sklearn": "integrations.sklearn",
    "lightning": "integrations.lightning",
    "lightning_predict": "integrations.lightning_predict",
    "export": "integrations.onnx_export",  # the ONNX export (onnx, onnxruntime)
    "agile": "integrations.agile",  # agile modelling on perch-hoplite's embedding database
}

# Modules that stay at the top level: the public face, the hub entry points, labels, the CLI, the notebooks' helpers.
STAY = {"__init__", "_version", "_files", "_hubconf_support", "entrypoints", "labels", "cli", "cli_agile", "tutorial"}

SUBPACKAGES: dict[str, str] = {
    "encoder": "The encoder: BEATs, the Kaldi filterbank, the user-facing ``AvexModel`` and the preprocessing "
               "contract it carries.",
    "hub": "Weights as data and how they arrive: the registry, download -> SHA-256 verify -> safetensors -> "
           "strict load, and the provenance of weights and probes.",
    "audio": "Audio in: decoding and the channel contract, windows, datasets (folders, manifests), "
             "augmentations and the synthetic dataset.",
    "embed": "Embeddings out: extraction with caches, file inference and output writers.",
    "heads": "What sits on the embeddings: probes, probe training, fine-tuning helpers, evaluation and metrics.",
    "integrations": "Other libraries' interfaces: scikit-learn, Lightning (fine-tuning, distributed prediction), "
                    "ONNX export, perch-hoplite (agile modelling).",
}

# Files outside the package whose text is rewritten (globs from the repository root).
TEXT_GLOBS = ["hubconf.py", "README.md", "pyproject.toml", "environment.yml", "tests/**/*.py", "tests/**/*.md",
              "benchmarks/**/*.py", "benchmarks/**/*.md", "notebooks/**/*.py", "notebooks/**/*.md",
              "notebooks/**/*.ipynb", "docs/**/*.md", "docs/**/*.py", "docs/**/*.yml", "docs/**/*.ipynb",
              "mkdocs.yml", ".github/**/*.yml", ".ci/*", "tools/*.md"]


class RestructureError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"restructure: {message}")


def new_name(old: str) -> str:
    """Full dotted name after the move, for a full dotted name before it (``avex_hub.audio`` -> ``...contract``)."""
    parts = old.split(".")
    if len(parts) >= 2 and parts[0] == PACKAGE and parts[1] in MOVES:
        return ".".join([PACKAGE, MOVES[parts[1]], *parts[2:]])
    return old


# --- the text rewrite (everywhere) -----------------------------------------------------------------------------

_OLD = "|".join(sorted(map(re.escape, MOVES), key=len, reverse=True))
_DOTTED = re.compile(rf"(?<![\w.]){PACKAGE}\.({_OLD})(?![\w])")
_PATH = re.compile(rf"(?<![\w/]){PACKAGE}/({_OLD})\.py\b")
_ALIAS = r"\w+(?:\s+as\s+\w+)?"
_DROP = re.compile(r"^.*<!-- restructure: remove after applying -->\n", re.M)
_FROM_PACKAGE = re.compile(rf"^([ \t]*)from {PACKAGE} import ({_ALIAS}(?:[ \t]*,[ \t]*{_ALIAS})*)([ \t]*#.*)?$", re.M)
_FROM_PACKAGE_INLINE = re.compile(rf"from {PACKAGE} import ({_ALIAS}(?:, {_ALIAS})*)(?=\\n|\"|$)", re.M)


def _split_names(names: str) -> list[tuple[str, str | None]]:
    out = []
    for item in names.split(","):
        bits = item.split()
        out.append((bits[0], bits[2] if len(bits) == 3 else None))
    return out


def _from_statements(package: str, names: list[tuple[str, str | None]], relative_to: str | None = None) -> list[str]:
    """``from <package> import ...`` lines for names of ``package`` (old names), grouped by their new package."""
    groups: dict[str, list[str]] = {}
    for name, alias in names:
        full = new_name(f"{package}.{name}")
        home, _, leaf = full.rpartition(".")
        groups.setdefault(home, []).append(leaf + (f" as {alias}" if alias else ""))
    lines = []
    for home, leaves in groups.items():
        source = home if relative_to is None else relative(home, relative_to)
        lines.append(f"from {source} import {', '.join(leaves)}")
    return lines


def rewrite_text(text: str, *, notebook_json: bool = False) -> str:
    """The rewrite for any file: ``from avex_hub import <module>``, dotted names, then file paths."""
    def line(match: re.Match) -> str:
        names = _split_names(match.group(2))
        if not any(name in MOVES for name, _ in names):
            return match.group(0)
        statements = [match.group(1) + s for s in _from_statements(PACKAGE, names)]
        statements[0] += match.group(3) or ""  # a trailing comment (noqa, ...) stays with the first
        return "\n".join(statements)

    def inline(match: re.Match) -> str:  # inside a notebook's JSON strings: several statements join with "; "
        names = _split_names(match.group(1))
        if not any(name in MOVES for name, _ in names):
            return match.group(0)
        return "; ".join(_from_statements(PACKAGE, names))

    text = _DROP.sub("", text)  # lines that only describe the flat layout
    # Dotted names first: the import lines written next hold new dotted names that must not be rewritten again.
    text = _DOTTED.sub(lambda m: f"{PACKAGE}.{MOVES[m.group(1)]}", text)
    text = _FROM_PACKAGE_INLINE.sub(inline, text) if notebook_json else _FROM_PACKAGE.sub(line, text)
    return _PATH.sub(lambda m: f"{PACKAGE}/{MOVES[m.group(1)].replace('.', '/')}.py", text)


# --- relative imports inside the package ------------------------------------------------------------------------

def relative(target: str, package: str) -> str:
    """``target`` (a full dotted module or package) as a relative import source from inside ``package``."""
    t, p = target.split("."), package.split(".")
    common = 0
    while common < min(len(t), len(p)) and t[common] == p[common]:
        common += 1
    return "." * (len(p) - common + 1) + ".".join(t[common:])


def _lines(text: str) -> list[str]:
    """Lines as ast counts them (only \\n ends a line; str.splitlines would also split at form feeds)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _offset(lines: list[str], lineno: int, col: int) -> int:
    """Character offset of (1-based line, UTF-8 byte column)."""
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode()[:col].decode())


def rewrite_module(text: str, old_module: str, is_package_init: bool) -> str:
    """Relative imports of one package file, re-aimed from its new home; then the generic text rewrite."""
    old_package = old_module if is_package_init else old_module.rpartition(".")[0]
    new_package = new_name(old_module) if is_package_init else new_name(old_module).rpartition(".")[0]
    tree = ast.parse(text)
    lines = _lines(text)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = old_package.split(".")
        base = ".".join(base[: len(base) - node.level + 1])
        start = _offset(lines, node.lineno, node.col_offset)
        end = _offset(lines, node.end_lineno, node.end_col_offset)
        if node.module is not None:  # from .x import a, b: only the source changes
            source = relative(new_name(f"{base}.{node.module}"), new_package)
            head = re.match(r"from\s+\.*[\w.]*", text[start:end])
            edits.append((start, start + head.end(), f"from {source}"))
        elif any(alias.name in MOVES for alias in node.names) and base == PACKAGE:  # from . import x, y
            names = [(alias.name, alias.asname) for alias in node.names]
            indent = " " * node.col_offset
            statements = _from_statements(base, names, relative_to=new_package)
            edits.append((start, end, ("\n" + indent).join(statements)))
        else:  # from . import __version__ and the like: the package itself, seen from the new home
            source = relative(base, new_package)
            head = re.match(r"from\s+\.+", text[start:end])
            edits.append((start, start + head.end(), f"from {source}"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    if old_module == PACKAGE:
        text = _rewrite_lazy_tables(text)
    return rewrite_text(text)


def _rewrite_lazy_tables(text: str) -> str:
    """``__init__``'s ``_LAZY`` (module names -> their subpackage, deduplicated) and ``_LAZY_NAMES`` values."""
    tree = ast.parse(text)
    lines = _lines(text)
    edits = []
    for node in tree.body:
        target = node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) else None
        if target == "_LAZY" and isinstance(node.value, ast.Set):
            names = [e.value for e in node.value.elts]
            homes = list(dict.fromkeys(MOVES[n].split(".")[0] if n in MOVES else n for n in names))
            value = "{" + ", ".join(f'"{h}"' for h in homes) + "}"
        elif target == "_LAZY_NAMES" and isinstance(node.value, ast.Dict):
            items = [(k.value, v.value) for k, v in zip(node.value.keys, node.value.values)]
            value = "{\n" + "".join(f'    "{k}": "{MOVES.get(v, v)}",\n' for k, v in items) + "}"
        else:
            continue
        start = _offset(lines, node.value.lineno, node.value.col_offset)
        end = _offset(lines, node.value.end_lineno, node.value.end_col_offset)
        edits.append((start, end, value))
    if len(edits) != 2:
        raise RestructureError(f"{PACKAGE}/__init__.py: expected the lazy tables _LAZY and _LAZY_NAMES, found "
                               f"{len(edits)} of them; update _rewrite_lazy_tables")
    for start, end, value in sorted(edits, reverse=True):
        text = text[:start] + value + text[end:]
    return text


# --- the run ------------------------------------------------------------------------------------------------------

def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def check_tree(root: Path, allow_dirty: bool) -> list[str]:
    """The flat modules to move; raises RestructureError when the tree is not ready or a module is unknown."""
    package = root / PACKAGE
    if not package.is_dir() or not (root / "hubconf.py").is_file():
        raise RestructureError(f"run from the repository root (expected {PACKAGE}/ and hubconf.py in {root})")
    done = sorted(p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    if done:
        raise RestructureError(f"{PACKAGE}/ already has subpackages {done}: the codemod runs once, on the flat "
                               "layout; start again from a clean checkout")
    if not allow_dirty and git("status", "--porcelain"):
        raise RestructureError("the working tree has changes; commit or stash them first (or --allow-dirty)")
    modules = sorted(p.stem for p in package.glob("*.py"))
    unknown = [m for m in modules if m not in MOVES and m not in STAY]
    if unknown:
        listing = "\n".join(f"    {PACKAGE}/{m}.py" for m in unknown)
        raise RestructureError(f"{len(unknown)} module(s) in neither MOVES nor STAY of tools/restructure.py:\n"
                               f"{listing}\nadd a row for each (old name -> 'subpackage.module', or to STAY) "
                               "and run again")
    missing = sorted(set(MOVES) - set(modules))
    if missing:  # kept in the table: a reference to such a module is rewritten like the others
        print(f"restructure: note: table rows without a module (nothing to move): {missing}", file=sys.stderr)
    return [m for m in modules if m in MOVES]


def text_files(root: Path) -> list[Path]:
    found = {p for pattern in TEXT_GLOBS for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def subpackage_init(name: str, modules: list[str]) -> str:
    doc = textwrap.fill(SUBPACKAGES[name], width=113, subsequent_indent="")
    listing = textwrap.fill("(" + ", ".join(f'"{m}"' for m in modules) + ("," if len(modules) == 1 else "") + ")",
                            width=108, subsequent_indent="            ")
    return f'''"""{doc}"""

from importlib import import_module

_MODULES = {listing}


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.{name}.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{{name}}", __name__)
    raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
'''


def apply(root: Path, modules: list[str]) -> None:
    package = root / PACKAGE
    new_text: dict[Path, str] = {}
    before: dict[Path, str] = {}  # the original text, by the path it ends up at
    for path in sorted(package.glob("*.py")):
        stem = path.stem
        old_module = PACKAGE if stem == "__init__" else f"{PACKAGE}.{stem}"
        target = package / (MOVES[stem].replace(".", "/") + ".py") if stem in MOVES else path
        before[target] = path.read_text()
        new_text[target] = rewrite_module(before[target], old_module, stem == "__init__")
    for path in text_files(root):
        text = before[path] = path.read_text()
        rewritten = rewrite_text(text, notebook_json=path.suffix == ".ipynb")
        if path.suffix == ".ipynb":
            json.loads(rewritten)  # still valid JSON
        if rewritten != text:
            new_text[path] = rewritten
    homes: dict[str, list[str]] = {}
    for stem in modules:
        home, leaf = MOVES[stem].split(".")
        homes.setdefault(home, []).append(leaf)
    for home in homes:
        (package / home).mkdir(exist_ok=True)
    for stem in modules:
        git("mv", f"{PACKAGE}/{stem}.py", f"{PACKAGE}/{MOVES[stem].replace('.', '/')}.py")
    for home, leaves in homes.items():
        if home not in SUBPACKAGES:
            raise RestructureError(f"no description for subpackage {home!r}: add it to SUBPACKAGES")
        new_text[package / home / "__init__.py"] = subpackage_init(home, sorted(leaves))
    for path, text in new_text.items():
        if path.suffix == ".py":
            ast.parse(text, str(path))  # the rewrite must leave valid Python
        path.write_text(text)
    git("add", "-A", PACKAGE, *[str(p.relative_to(root)) for p in new_text])
    print(f"restructure: moved {len(modules)} modules into {sorted(homes)}; rewrote {len(new_text)} files")
    long = [f"{p.relative_to(root)}:{i}" for p, text in new_text.items() if p.suffix == ".py"
            for i, line in enumerate(text.splitlines(), 1) if len(line) > 120 and line not in before.get(p, "")]
    if long:  # longer dotted paths can push a line over the limit: worth a look, not an error
        print(f"restructure: {len(long)} line(s) now over 120 characters: {', '.join(long)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the table against the tree")
    parser.add_argument("--allow-dirty", action="store_true", help="run on a tree with uncommitted changes")
    args = parser.parse_args(argv)
    root = Path.cwd()
    modules = check_tree(root, allow_dirty=args.allow_dirty or args.check)
    if args.check:
        print(f"restructure: all {len(modules)} flat modules have a row; ready")
        return 0
    apply(root, modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
