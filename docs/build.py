"""Build the documentation site: README, tutorials with their figures, API reference; strict, then checked.

    python docs/build.py                 # -> site/ (static HTML)
    python docs/build.py --site-dir out  # elsewhere
    python docs/build.py --check-only    # only check an already built site for the tutorials' figures

Steps, each failing the build on any problem:

1. generate the pages that come from elsewhere in the repository (git-ignored, rewritten on every build):
   ``docs/index.md`` (README.md), ``docs/tutorials/index.md`` (notebooks/README.md) and
   ``docs/reference.md`` (every public module of ``avex_hub``, rendered by mkdocstrings);
2. execute every tutorial ``notebooks/NN_*.ipynb`` in ci mode (tiny checkpoint, synthetic data, no network) from
   the ``notebooks/`` folder, as nbval does, into ``docs/tutorials/`` (the committed notebooks hold no outputs);
3. ``mkdocs build --strict``: a warning, an unknown link or a page left out of the navigation fails it;
4. :func:`check_figures`: every tutorial page holds at least as many embedded PNG figures as its notebook lists
   in its last checked cell ("N figures displayed:").
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
TUTORIAL = re.compile(r"^\d\d_\w+\.ipynb$")
FIGURE_LIST = re.compile(r"^(\d+) figures displayed:$", re.M)
PNG = re.compile(r"<img\b[^>]*\bsrc=\"data:image/png;base64,", re.I)


def tutorials(folder: Path = NOTEBOOKS) -> list[Path]:
    """The tutorial notebooks ``NN_name.ipynb`` of ``folder``, in order."""
    return sorted(p for p in folder.iterdir() if TUTORIAL.match(p.name))


def expected_figures(notebook: Path) -> int:
    """How many figures ``notebook`` says it displays: the stored "N figures displayed:" of its listing cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in reversed(nb.cells):
        text = "".join(o.get("text", "") for o in cell.get("outputs", []))
        found = FIGURE_LIST.search(text)
        if found:
            return int(found.group(1))
    raise ValueError(f"{notebook}: no stored 'N figures displayed:' output; every tutorial ends by listing the "
                     "figures it showed (see notebooks/README.md)")


def page_of(site: Path, notebook: Path) -> Path:
    """The HTML page mkdocs writes for a tutorial copied to ``docs/tutorials/``."""
    return site / "tutorials" / notebook.stem / "index.html"


def check_figures(site: Path, notebooks: list[Path]) -> dict[str, int]:
    """Embedded PNG images per tutorial page of ``site``; ``ValueError`` naming each page with fewer than its
    notebook lists (or no page at all)."""
    found, problems = {}, []
    for notebook in notebooks:
        page = page_of(site, notebook)
        if not page.is_file():
            problems.append(f"{notebook.name}: no page {page}")
            continue
        found[notebook.stem] = len(PNG.findall(page.read_text(encoding="utf-8")))
        wanted = expected_figures(notebook)
        if found[notebook.stem] < wanted:
            problems.append(f"{page}: {found[notebook.stem]} embedded PNG figures, the notebook lists {wanted}")
    if problems:
        raise ValueError("tutorial pages without their figures:\n  " + "\n  ".join(problems)
                         + "\nbuild the site with python docs/build.py (it executes the notebooks in ci mode)")
    return found


REPOSITORY = "https://github.com/earthspecies/avex/blob/main/"
_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)(#[^)\s]*)?\)")


def _copy_page(source: Path, target: Path) -> None:
    """Copy a markdown page into the site; a relative link to a repository file that the site does not hold
    (``benchmarks/README.md#memory``) becomes a link to that file on GitHub, so strict mode finds no broken link."""
    def link(match: re.Match) -> str:
        path, anchor = match.group(1), match.group(2) or ""
        if (target.parent / path).exists() or not (source.parent / path).exists():
            return match.group(0)  # a page of the site, or not a file of ours: left for mkdocs to judge
        return f"]({REPOSITORY}{(source.parent / path).resolve().relative_to(ROOT).as_posix()}{anchor})"

    target.write_text(_LINK.sub(link, source.read_text(encoding="utf-8")), encoding="utf-8")


def write_pages() -> None:
    """Copy README.md and notebooks/README.md in; the API page lists every public module of avex_hub."""
    (DOCS / "tutorials").mkdir(exist_ok=True)
    _copy_page(ROOT / "README.md", DOCS / "index.md")
    _copy_page(NOTEBOOKS / "README.md", DOCS / "tutorials" / "index.md")
    import avex_hub

    modules = sorted(m.name for m in pkgutil.walk_packages(avex_hub.__path__, "avex_hub.")
                     if not any(part.startswith("_") for part in m.name.split(".")))
    lines = ["# API reference", "", "Generated from the docstrings of every public module.", ""]
    for name in ["avex_hub"] + modules:
        lines += [f"## `{name}`", "", f"::: {name}", "    options:", "      heading_level: 3", ""]
    (DOCS / "reference.md").write_text("\n".join(lines), encoding="utf-8")


def execute(notebook: Path, out: Path, timeout_s: int = 600) -> float:
    """Run ``notebook`` in ci mode from notebooks/ and write it with its outputs to ``out``; seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["AVEX_HUB_TUTORIAL_MODE"] = "ci"  # the kernel inherits it, as under nbval
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    nbformat.write(nb, out)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-dir", type=Path, default=ROOT / "site")
    parser.add_argument("--check-only", action="store_true", help="only check the figures of a built site")
    args = parser.parse_args(argv)
    notebooks = tutorials()
    if not args.check_only:
        (DOCS / "tutorials").mkdir(exist_ok=True)
        for notebook in notebooks:
            seconds = execute(notebook, DOCS / "tutorials" / notebook.name)
            print(f"executed {notebook.name} in ci mode: {seconds:.0f} s", flush=True)
        write_pages()  # after the tutorials: a link to one of them stays a link within the site
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--site-dir",
                        str(args.site_dir.resolve())], cwd=ROOT, check=True)
    found = check_figures(args.site_dir, notebooks)
    print("figures per tutorial page:", found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
