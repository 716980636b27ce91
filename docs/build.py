"""Build the documentation site: README, tutorials with their figures, API reference; strict, then checked.

    python docs/build.py                          # -> site/ (static HTML); executes the tutorials itself
    python docs/build.py --executed DIR           # the tutorials as nbval just ran them (see notebooks/conftest.py)
    python docs/build.py --site-dir out           # elsewhere
    python docs/build.py --check-only             # only check an already built site

Steps, each failing the build on any problem:

1. generate the pages that come from elsewhere in the repository (git-ignored, rewritten on every build):
   ``docs/index.md`` (README.md), ``docs/tutorials/index.md`` (notebooks/README.md) and
   ``docs/reference.md`` (every public module of ``avex_hub``, rendered by mkdocstrings);
2. the tutorials ``notebooks/NN_*.ipynb`` with their ci-mode outputs into ``docs/tutorials/``: with ``--executed``,
   the copies the test suite's nbval run wrote (``AVEX_HUB_EXECUTED_NOTEBOOKS``; each must hold the committed
   notebook's cells, so a stale copy cannot reach the site), so every tutorial runs once per CI run; without it,
   executed here in ci mode from the ``notebooks/`` folder, as nbval does. Either way the site's copy opens with the
   plumbing (parameters, install and setup cells) folded into one collapsed block, and no output may print a path of
   the machine that ran it;
3. ``mkdocs build --strict``: a warning, an unknown link or a page left out of the navigation fails it;
4. :func:`check_figures`: every tutorial page holds at least as many embedded PNG figures as its notebook lists
   in its last checked cell ("N figures displayed:");
5. :func:`check_in_browser`: every page opened in headless Chromium as a reader sees it (1280 x 900 window, every
   collapsed block opened): no code block or output wider than its box (cut off at the right edge), every image
   loaded, and each tutorial page showing its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
TUTORIAL = re.compile(r"^\d\d_\w+\.ipynb$")
FIGURE_LIST = re.compile(r"^(\d+) figures displayed:$", re.M)
PNG = re.compile(r"<img\b[^>]*\bsrc=\"data:image/png;base64,", re.I)
PLUMBING = 3  # every tutorial opens with three code cells: parameters, install, setup (tests/test_notebooks.py)
HIDE_INPUT = "site-hide-input"  # mkdocs.yml's remove_tag_config: the site shows such a cell's outputs only


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


# -- the tutorials' site copies ----------------------------------------------------------------------------------
def executed_copy(notebook: Path, folder: Path):
    """The executed copy of ``notebook`` in ``folder`` (written by nbval's run, notebooks/conftest.py); ValueError
    when it is missing or its cells differ from the committed notebook's (a copy of another version)."""
    import nbformat

    copy = folder / notebook.name
    if not copy.is_file():
        raise ValueError(f"no executed copy of {notebook.name} in {folder}: run the notebooks under nbval with "
                         f"AVEX_HUB_EXECUTED_NOTEBOOKS={folder} first (a notebook with a failing cell is not written)")
    executed, committed = nbformat.read(copy, as_version=4), nbformat.read(notebook, as_version=4)
    if [(c.cell_type, c.source) for c in executed.cells] != [(c.cell_type, c.source) for c in committed.cells]:
        raise ValueError(f"{copy} holds other cells than {notebook}: it was executed from another version; run the "
                         "notebooks under nbval again")
    return executed


def machine_paths(nb, roots: list[str]) -> list[str]:
    """Output lines of ``nb`` that print a path of the machine that ran it (a temporary folder, the checkout, the
    home folder): such a path means nothing to a reader, and differs between runs."""
    found = []
    for number, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") + "".join(output.get("data", {}).get("text/plain", ""))
            for line in text.splitlines():
                if any(root in line for root in roots):
                    found.append(f"cell {number}: {line.strip()[:160]}")
    return found


def for_the_site(nb):
    """``nb`` as the site shows it: its first three code cells (parameters, install, setup: the notebook's plumbing)
    folded into one collapsed block after the opening text, the setup cell's outputs (the mode it ran in) kept
    visible below it. The notebook itself keeps them as they are."""
    import nbformat

    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"][:PLUMBING]
    if len(code) < PLUMBING:
        raise ValueError(f"a tutorial opens with {PLUMBING} code cells (parameters, install, setup); found {len(code)}")
    # One line of HTML: a blank line would end the HTML block in Markdown; &#10; is the newline inside <pre>.
    blocks = "".join(f'<pre><code class="language-python">{escape(nb.cells[i].source).replace(chr(10), "&#10;")}'
                     "</code></pre>" for i in code)
    folded = nbformat.v4.new_markdown_cell(
        '<details class="avex-plumbing"><summary>Parameters, install and setup: the notebook\'s first three cells '
        f"(click to show)</summary>{blocks}</details>")
    setup = nbformat.from_dict(json.loads(json.dumps(nb.cells[code[-1]])))
    setup.metadata.setdefault("tags", []).append(HIDE_INPUT)
    site = nbformat.from_dict(json.loads(json.dumps(nb)))
    site.cells = [c for i, c in enumerate(nb.cells) if i not in code]
    at = code[0]  # where the parameters cell was: after the notebook's opening text
    site.cells[at:at] = [folded, setup] if setup.outputs else [folded]
    return site


def machine_roots() -> list[str]:
    """Paths whose appearance in an output gives the build machine away."""
    roots = {tempfile.gettempdir().rstrip("/") + "/", str(ROOT), str(Path.home()) + "/"}
    return sorted(r for r in roots if len(r) > 2)


def write_site_notebook(nb, target: Path) -> None:
    """Write the site copy of an executed tutorial; ValueError if any output prints a machine path."""
    import nbformat

    leaks = machine_paths(nb, machine_roots())
    if leaks:
        raise ValueError(f"{target.name}: outputs print paths of this machine, which mean nothing to a reader:\n  "
                         + "\n  ".join(leaks) + "\nprint names relative to the data folder instead")
    nbformat.write(for_the_site(nb), target)


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


def execute(notebook: Path, timeout_s: int = 600):
    """Run ``notebook`` in ci mode from notebooks/, as nbval does; the executed notebook and the seconds taken."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["AVEX_HUB_TUTORIAL_MODE"] = "ci"  # the kernel inherits it, as under nbval
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return nb, time.perf_counter() - start


# -- the pages as a reader sees them -----------------------------------------------------------------------------
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1280,900", "--virtual-time-budget=15000")
# Run in the page once it has loaded: open every collapsed block, then measure what a reader would see.
_PROBE = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const cut = [], broken = [];
  document.querySelectorAll("pre").forEach(pre => {
    if (pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1) {
      const line = pre.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), "");
      cut.push({box: pre.clientWidth, content: pre.scrollWidth, line: line.trim().slice(0, 140)});
    }
  });
  const images = [...document.querySelectorAll("img")];
  // Images of the site itself (figures are data: URIs); a remote badge is not the site's to serve.
  images.filter(img => !/^https?:/.test(img.getAttribute("src") || ""))
        .forEach(img => { if (!img.complete || img.naturalWidth === 0) broken.push(img.src.slice(-100)); });
  const png = images.filter(img => img.src.startsWith("data:image/png") && img.naturalWidth > 0
                                   && img.getBoundingClientRect().width > 0).length;
  const out = document.createElement("script");
  out.type = "application/json"; out.id = "avex-page-check";
  out.textContent = JSON.stringify({cut, broken, png});
  document.body.appendChild(out);
});
</script>"""
_RESULT = re.compile(r'<script type="application/json" id="avex-page-check">(.*?)</script>', re.S)


def chromium() -> str | None:
    """The headless browser the check uses (Debian's ``chromium`` package; Google Chrome, which GitHub's Ubuntu
    runners have, also does), or None when none is installed."""
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


def open_in_browser(page: Path, browser: str, timeout_s: float = 120) -> dict:
    """Open ``page`` in headless Chromium and return what the reader sees: ``cut`` (code blocks wider than their
    box: the longest line of each), ``broken`` (images that did not load) and ``png`` (PNG figures shown)."""
    probe = page.with_name(f".avex-check-{page.name}")
    html = page.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", _PROBE + "</body>") if "</body>" in html else html + _PROBE,
                     encoding="utf-8")
    profile = tempfile.mkdtemp(prefix="avex-chromium-")
    try:
        result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                 probe.resolve().as_uri()], capture_output=True, text=True, timeout=timeout_s)
    finally:
        probe.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    found = _RESULT.search(result.stdout)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"headless Chromium did not render {page} (exit {result.returncode}): "
                           f"{result.stderr.strip()[-600:]}")
    return json.loads(found.group(1))


def check_in_browser(site: Path, notebooks: list[Path], browser: str | None = None) -> dict[str, dict]:
    """Open every page of ``site`` in headless Chromium; ValueError naming each page with cut-off code, an image
    that did not load, or fewer PNG figures on screen than its notebook lists."""
    browser = browser or chromium()
    if browser is None:
        raise FileNotFoundError("the site check needs headless Chromium: apt-get install chromium (.ci/run does)")
    wanted = {page_of(site, nb).resolve(): expected_figures(nb) for nb in notebooks}
    seen, problems = {}, []
    for page in sorted(site.rglob("index.html")):
        if page.parent.name in ("404", "search") or "assets" in page.parts:
            continue
        name = page.parent.relative_to(site).as_posix() or "home"
        seen[name] = view = open_in_browser(page, browser)
        for block in view["cut"]:
            problems.append(f"{name}: code cut off at the right edge ({block['content']} px in a {block['box']} px "
                            f"box): {block['line']!r}")
        problems += [f"{name}: image did not load: {src}" for src in view["broken"]]
        if view["png"] < wanted.get(page.resolve(), 0):
            problems.append(f"{name}: {view['png']} PNG figures on screen, the notebook lists {wanted[page.resolve()]}")
    missing = [p for p in wanted if not p.is_file()]
    problems += [f"no page {p}" for p in missing]
    if problems:
        raise ValueError("the site as a reader sees it (headless Chromium, 1280 x 900):\n  " + "\n  ".join(problems))
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-dir", type=Path, default=ROOT / "site")
    parser.add_argument("--executed", type=Path, default=None,
                        help="folder of the tutorials as nbval executed them (AVEX_HUB_EXECUTED_NOTEBOOKS)")
    parser.add_argument("--check-only", action="store_true", help="only check the pages of a built site")
    args = parser.parse_args(argv)
    notebooks = tutorials()
    if not args.check_only:
        (DOCS / "tutorials").mkdir(exist_ok=True)
        for notebook in notebooks:
            if args.executed is not None:
                nb = executed_copy(notebook, args.executed)
                how = f"executed by nbval ({nb.metadata.get('avex_hub_run', {}).get('seconds', '?')} s)"
            else:
                nb, seconds = execute(notebook)
                how = f"executed here in ci mode: {seconds:.0f} s"
            write_site_notebook(nb, DOCS / "tutorials" / notebook.name)
            print(f"{notebook.name}: {how}", flush=True)
        write_pages()  # after the tutorials: a link to one of them stays a link within the site
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--site-dir",
                        str(args.site_dir.resolve())], cwd=ROOT, check=True)
    found = check_figures(args.site_dir, notebooks)
    print("figures per tutorial page:", found)
    seen = check_in_browser(args.site_dir, notebooks)
    print(f"{len(seen)} pages opened in headless Chromium: no code cut off, every image loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
