"""The documentation site's build script (docs/build.py): the figure check, the navigation and the generated pages.

The full build (notebooks executed, mkdocs --strict) runs in .ci/run; a built site can be checked here too by
pointing ``AVEX_HUB_DOCS_SITE`` at it.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

PNG_TAG = '<img alt="png" src="data:image/png;base64,{}">'.format(base64.b64encode(b"\x89PNG fake").decode())


def _notebook(path: Path, figures: int) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(len(FIGURES))")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=f"{figures} figures displayed:\n" + " - a\n" * figures)]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def _page(site: Path, notebook: Path, images: int) -> None:
    page = build.page_of(site, notebook)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<html><body>" + "<p>text</p>".join([PNG_TAG] * images) + "</body></html>", encoding="utf-8")


def test_check_figures_counts_embedded_pngs_per_page(tmp_path):
    notebooks = [_notebook(tmp_path / "01_a.ipynb", 2), _notebook(tmp_path / "02_b.ipynb", 1)]
    _page(tmp_path / "site", notebooks[0], 2)
    _page(tmp_path / "site", notebooks[1], 3)
    assert build.check_figures(tmp_path / "site", notebooks) == {"01_a": 2, "02_b": 3}


def test_check_figures_fails_on_a_page_without_its_figures(tmp_path):
    notebooks = [_notebook(tmp_path / "01_a.ipynb", 2), _notebook(tmp_path / "02_b.ipynb", 1)]
    _page(tmp_path / "site", notebooks[0], 1)  # one figure lost (a linked image, an unexecuted cell, ...)
    with pytest.raises(ValueError, match=r"01_a/index.html: 1 embedded PNG figures, the notebook lists 2") as err:
        build.check_figures(tmp_path / "site", notebooks)
    assert "02_b.ipynb: no page" in str(err.value)


def test_png_links_do_not_count_as_embedded_figures(tmp_path):
    notebook = _notebook(tmp_path / "01_a.ipynb", 1)
    page = build.page_of(tmp_path / "site", notebook)
    page.parent.mkdir(parents=True)
    page.write_text('<img src="figure.png"> <img src="data:image/svg+xml;base64,AAAA">', encoding="utf-8")
    with pytest.raises(ValueError, match="0 embedded PNG"):
        build.check_figures(tmp_path / "site", [notebook])


def test_every_tutorial_lists_its_figures_and_is_in_the_navigation():
    notebooks = build.tutorials()
    numbers = [int(p.name[:2]) for p in notebooks]
    assert numbers[0] == 1 and numbers == sorted(set(numbers)), numbers  # one notebook per number, in order
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for notebook in notebooks:
        assert build.expected_figures(notebook) >= 1
        assert f"- tutorials/{notebook.name}" in nav, f"add tutorials/{notebook.name} to the nav of mkdocs.yml"


def test_docs_extra_and_ci_build():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    docs_extra = re.search(r"^docs = \[(.*?)\]$", pyproject, re.M | re.S).group(1)
    for tool in ("mkdocs", "mkdocs-material", "mkdocs-jupyter", "mkdocstrings[python]"):
        assert f'"{tool}' in docs_extra
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'-e "\.\[dev,docs(,[a-z]+)*\]"', ci) and "python docs/build.py" in ci
    # One execution of the tutorials per CI run: nbval's, which the site is then built from; Chromium checks the pages.
    assert 'AVEX_HUB_EXECUTED_NOTEBOOKS="$EXECUTED" python -m pytest' in ci and '--executed "$EXECUTED"' in ci
    assert "apt-get install -y -qq --no-install-recommends chromium fonts-liberation" in ci  # no daemons, no perl
    assert "strict: true" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


@pytest.mark.skipif(not os.environ.get("AVEX_HUB_DOCS_SITE"), reason="set AVEX_HUB_DOCS_SITE to a built site")
def test_built_site_holds_every_tutorial_figure():
    site = Path(os.environ["AVEX_HUB_DOCS_SITE"])
    found = build.check_figures(site, build.tutorials())
    assert set(found) == {p.stem for p in build.tutorials()}
    assert (site / "reference" / "index.html").is_file() and (site / "index.html").is_file()


# -- the tutorials as the site shows them ------------------------------------------------------------------------
def _tutorial(cells_out: list[list]) -> object:
    """A notebook laid out as a tutorial: opening text, parameters, install and setup cells, then one more cell;
    ``cells_out`` are the outputs of the four code cells."""
    nb = nbformat.v4.new_notebook()
    sources = ['MODE = "ci"', "import sys", "FIGURES = []\nprint('mode ci')", "x = 1\n\n\nprint(x)"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A tutorial\n\n**Goal.** something")]
    for source, outputs in zip(sources, cells_out):
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = outputs
        nb.cells.append(cell)
    return nb


def _stdout(text: str):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def test_the_site_folds_the_plumbing_and_keeps_the_setup_output():
    nb = _tutorial([[], [], [_stdout("mode ci\n")], [_stdout("1\n")]])
    site = build.for_the_site(nb)
    kinds = [(c.cell_type, c.source[:20]) for c in site.cells]
    assert kinds[0] == ("markdown", "# A tutorial\n\n**Goal")
    folded, setup, rest = site.cells[1:]
    assert folded.cell_type == "markdown" and folded.source.startswith('<details class="avex-plumbing">')
    assert "\n" not in folded.source  # one line of HTML: a blank line would end the HTML block in Markdown
    for source in ('MODE = &quot;ci&quot;', "import sys", "FIGURES = []&#10;print(&#x27;mode ci&#x27;)"):
        assert source in folded.source
    assert setup.cell_type == "code" and build.HIDE_INPUT in setup.metadata["tags"]
    assert setup.outputs[0].text == "mode ci\n" and rest.source == "x = 1\n\n\nprint(x)"
    assert [c.source for c in nb.cells if c.cell_type == "code"][:1] == ['MODE = "ci"']  # the notebook is unchanged
    assert "site-hide-input" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")  # mkdocs-jupyter drops its code
    without_output = build.for_the_site(_tutorial([[], [], [], []]))
    assert [c.cell_type for c in without_output.cells] == ["markdown", "markdown", "code"]


def test_outputs_that_print_a_path_of_the_build_machine_fail_the_build(tmp_path):
    roots = build.machine_roots()
    assert any(r.startswith("/tmp") for r in roots) and str(ROOT) in roots
    leak = _tutorial([[], [], [_stdout("mode ci\n")],
                      [_stdout("ok\n"), _stdout(f"wrote {ROOT}/notebooks/x.wav\n")]])
    assert build.machine_paths(leak, roots) == [f"cell 4: wrote {ROOT}/notebooks/x.wav"]
    with pytest.raises(ValueError, match="print paths of this machine"):
        build.write_site_notebook(leak, tmp_path / "01_a.ipynb")
    clean = _tutorial([[], [], [_stdout("mode ci\n")], [_stdout("clips/a/1.wav\n")]])
    build.write_site_notebook(clean, tmp_path / "01_a.ipynb")
    assert (tmp_path / "01_a.ipynb").is_file()


def test_the_build_takes_nbvals_executed_copy_only_if_it_holds_the_committed_cells(tmp_path):
    committed = tmp_path / "01_a.ipynb"
    nbformat.write(_tutorial([[], [], [], []]), committed)
    executed = tmp_path / "executed"
    with pytest.raises(ValueError, match="no executed copy of 01_a.ipynb"):
        build.executed_copy(committed, executed)
    executed.mkdir()
    run = _tutorial([[], [], [_stdout("mode ci\n")], [_stdout("1\n")]])
    nbformat.write(run, executed / "01_a.ipynb")
    assert build.executed_copy(committed, executed).cells[4].outputs[0].text == "1\n"
    run.cells[4].source = "x = 2"  # executed from another version of the notebook
    nbformat.write(run, executed / "01_a.ipynb")
    with pytest.raises(ValueError, match="executed from another version"):
        build.executed_copy(committed, executed)


# -- the pages as a reader sees them (headless Chromium; .ci/run installs Debian's chromium) -----------------------
def _html(body: str) -> str:
    return (f"<html><head><style>.box {{ width: 300px }} pre {{ overflow: auto }}</style></head>"
            f"<body><div class='box'>{body}</div></body></html>")


@pytest.mark.skipif(build.chromium() is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
def test_the_browser_check_sees_cut_off_code_missing_images_and_figures(tmp_path):
    long_line = "model = torch.hub.load('earthspecies/avex', 'esp_aves2_sl_beats_all', trust_repo=True, device=DEVICE)"
    png = _png_tag()
    page = tmp_path / "cut" / "index.html"
    page.parent.mkdir()
    page.write_text(_html(f"<pre>{long_line}</pre><pre>short</pre>{png}<img src='missing.png'>"), encoding="utf-8")
    seen = build.open_in_browser(page, build.chromium())
    assert [block["line"] for block in seen["cut"]] == [long_line]
    assert seen["cut"][0]["content"] > seen["cut"][0]["box"]
    assert len(seen["broken"]) == 1 and seen["broken"][0].endswith("missing.png") and seen["png"] == 1
    assert not list(page.parent.glob(".avex-check-*"))  # the probe copy is removed
    wrapped = tmp_path / "wrapped" / "index.html"
    wrapped.parent.mkdir()
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    wrapped.write_text(_html(f"<div class='md-typeset'><pre>{long_line}</pre></div>").replace(
        "</style>", f"{css}</style>"), encoding="utf-8")
    assert build.open_in_browser(wrapped, build.chromium())["cut"] == []  # the site's stylesheet wraps long lines


def _png_tag() -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


@pytest.mark.skipif(build.chromium() is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
def test_check_in_browser_fails_on_a_tutorial_page_without_its_figures_on_screen(tmp_path):
    notebook = _notebook(tmp_path / "01_a.ipynb", 2)
    page = build.page_of(tmp_path / "site", notebook)
    page.parent.mkdir(parents=True)
    page.write_text(_html(_png_tag()), encoding="utf-8")
    with pytest.raises(ValueError, match="01_a: 1 PNG figures on screen, the notebook lists 2"):
        build.check_in_browser(tmp_path / "site", [notebook])
    page.write_text(_html(_png_tag() * 2), encoding="utf-8")
    assert build.check_in_browser(tmp_path / "site", [notebook])["tutorials/01_a"]["png"] == 2


# -- docstring examples in the API reference ----------------------------------------------------------------------
def test_module_docstring_examples_render_as_python_code():
    import ast

    spec = importlib.util.spec_from_file_location("docstring_examples", ROOT / "docs" / "docstring_examples.py")
    examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(examples)
    raw = ast.get_docstring(ast.parse((ROOT / "avex_hub" / "__init__.py").read_text(encoding="utf-8")), clean=False)
    fenced = examples.fence_examples(raw)
    assert "```python\nimport avex_hub\nmodel = avex_hub.esp_aves2_sl_beats_all()" in fenced
    text = "Read it like this::\n\n    a = 1\n\n    b = 2\n\nThen prose.\n  - a list item's continuation\n"
    assert examples.fence_examples(text) == ("Read it like this:\n\n```python\na = 1\n\nb = 2\n```\n\nThen prose.\n"
                                             "  - a list item's continuation\n")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "docs/docstring_examples.py:CodeExamples" in config and "docstring_examples.py" in config.split("theme:")[0]
