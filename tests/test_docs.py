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
    assert [p.name[:2] for p in notebooks] == [f"{i:02d}" for i in range(1, len(notebooks) + 1)]
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
    assert "strict: true" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


@pytest.mark.skipif(not os.environ.get("AVEX_HUB_DOCS_SITE"), reason="set AVEX_HUB_DOCS_SITE to a built site")
def test_built_site_holds_every_tutorial_figure():
    site = Path(os.environ["AVEX_HUB_DOCS_SITE"])
    found = build.check_figures(site, build.tutorials())
    assert set(found) == {p.stem for p in build.tutorials()}
    assert (site / "reference" / "index.html").is_file() and (site / "index.html").is_file()
