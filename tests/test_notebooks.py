"""Structure of the tutorials in notebooks/ (nbval executes them; these checks are what execution cannot see).

- each notebook opens with a Colab badge to itself, an install cell and the parameters cell with the mode switch;
- it is committed clean: outputs only in ``# NBVAL_CHECK_OUTPUT`` cells, and those hold plain text that does not
  depend on the machine (no temporary paths) or on the mode;
- every figure is drawn through ``show(fig, title)`` (which refuses a figure that does not render as PNG), and the
  checked list of displayed figures in the last cells names exactly the figures the code draws, in order;
- the code they share lives in ``avex_hub.tutorial`` (tested in tests/test_tutorial.py), not in the notebooks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_embedding_extraction", "02_linear_probing", "03_fine_tuning", "04_evaluation", "05_agile_modeling",
         "06_monitoring"]
CHECK = "# NBVAL_CHECK_OUTPUT"


def load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module", params=NAMES)
def notebook(request):
    return request.param, load(request.param)


def test_all_four_tutorials_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


def test_valid_notebook_with_the_python3_kernel(notebook):
    name, nb = notebook
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_opens_with_badge_install_and_parameters(notebook):
    name, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    badge = f"https://colab.research.google.com/github/earthspecies/avex/blob/main/notebooks/{name}.ipynb"
    assert badge in first.source and "colab-badge.svg" in first.source
    parameters, install = code_cells(nb)[:2]
    assert "parameters" in parameters.metadata.get("tags", [])
    assert 'MODE = os.environ.get("AVEX_HUB_TUTORIAL_MODE", "real")' in parameters.source
    assert '"google.colab" in sys.modules' in install.source and "pip" in install.source
    # The mode is validated (avex_hub.tutorial.tutorial_mode raises on anything but real/ci) before anything runs.
    setup = code_cells(nb)[2]
    assert "MODE = tutorial_mode(MODE)" in setup.source and "%matplotlib inline" in setup.source
    assert "show = FIGURES.show" in setup.source


def test_shared_code_comes_from_the_package_not_from_copies(notebook):
    # Helpers live in avex_hub.tutorial; a notebook that defines its own would drift from the tested one.
    name, nb = notebook
    for cell in code_cells(nb):
        defined = {node.name for node in ast.walk(ast.parse(_python(cell.source)))
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        copies = defined & {"fetch_beans_zero", "find_repo_root", "show", "tutorial_mode", "FigureLog"}
        assert not copies, f"{name} defines its own {sorted(copies)}: import them from avex_hub.tutorial"
    setup = code_cells(nb)[2].source
    assert "from avex_hub.tutorial import" in setup and "find_repo_root()" in setup


def test_committed_clean_except_checked_cells(notebook):
    name, nb = notebook
    checked = 0
    for cell in code_cells(nb):
        if cell.source.startswith(CHECK):
            checked += 1
            assert cell.outputs, f"{name}: a checked cell has no stored output to compare with"
            for output in cell.outputs:
                assert output.output_type == "stream" and output.name == "stdout", (name, output.output_type)
                assert "/tmp/" not in output.text and "avex-tutorial-" not in output.text, output.text
                assert "False" not in output.text, f"{name}: a stored check failed:\n{output.text}"
        else:
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: stale output in\n{cell.source[:200]}"
    assert checked >= 2, f"{name}: expected several output-checked cells, found {checked}"


def _show_titles(source: str) -> list[str]:
    titles = []
    for node in ast.walk(ast.parse(_python(source))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show":
            assert len(node.args) == 2 and isinstance(node.args[1], ast.Constant), ast.dump(node)
            titles.append((node.lineno, node.args[1].value))
    return [title for _, title in sorted(titles)]


def _python(source: str) -> str:
    """Cell source with IPython magics commented out, so ast can parse it."""
    return re.sub(r"^(\s*)%", r"\1# %", source, flags=re.M)


def test_every_figure_is_shown_and_listed(notebook):
    name, nb = notebook
    drawn = []
    for cell in code_cells(nb):
        source = cell.source
        creates = len(re.findall(r"\bplt\.(subplots|figure)\(", source))
        titles = _show_titles(source)
        assert creates == len(titles), f"{name}: a cell creates {creates} figures but shows {len(titles)}"
        assert "plt.show()" not in source and "savefig" not in source
        drawn += titles
    assert drawn, f"{name} draws no figure"
    listing = code_cells(nb)[-2]
    assert listing.source.startswith(CHECK) and "FIGURES" in listing.source
    stored = "".join(output.text for output in listing.outputs).splitlines()
    assert stored == [f"{len(drawn)} figures displayed:"] + [f" - {title}" for title in drawn]


def test_notebook_checks_cover_the_mode_independent_facts():
    # The stored outputs must hold in both modes: no numbers that only the tiny checkpoint produces.
    for name in NAMES:
        for cell in code_cells(load(name)):
            if cell.source.startswith(CHECK):
                text = "".join(output.text for output in cell.outputs)
                assert not re.search(r"\b(64|7 labels|beats-tiny|synthetic)\b", text), (name, text)


def test_each_tutorial_teaches_with_exercises_and_collapsed_answers(notebook):
    # Two or three exercises, each under a markdown heading "Exercise N: ...", with an empty cell to try it in and
    # an answer that is collapsed (Jupyter's source_hidden, Colab's form view) but executed like any other cell.
    name, nb = notebook
    headings = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
                and re.match(r"#+ Exercise \d+: \S", cell.source)]
    assert 2 <= len(headings) <= 3, f"{name}: {len(headings)} exercises"
    for number, i in enumerate(headings, start=1):
        assert f"Exercise {number}:" in nb.cells[i].source
        stub, reveal, answer = nb.cells[i + 1:i + 4]
        assert stub.cell_type == "code" and "answer is below" in stub.source
        assert reveal.cell_type == "markdown" and reveal.source.startswith("<details>")
        assert answer.cell_type == "code" and answer.source.startswith(f"# Answer to exercise {number}")
        assert answer.metadata["jupyter"]["source_hidden"] and "answer" in answer.metadata["tags"]
        assert "NBVAL_SKIP" not in answer.source  # nbval runs the answers too


def test_each_tutorial_states_goal_runtime_and_points_to_the_one_mode_explanation(notebook):
    name, nb = notebook
    first = nb.cells[0].source
    assert "**Goal.**" in first and "**Runtime.**" in first and "GPU" in first
    assert "https://github.com/earthspecies/avex/blob/main/notebooks/README.md" in first
    # The mode table and the data-source prose live once, in notebooks/README.md, not in every notebook.
    prose = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "| mode | model | data | needs |" not in prose and "### Where the data comes from" not in prose
    install = code_cells(nb)[1].source
    assert "avex-hub[colab]" in install and "jupyter" not in install.split("google.colab")[1]


def test_the_8_khz_ceiling_is_shown_not_hidden():
    # Notebook 01 shows the HighFrequencyContentWarning once on purpose, measures the energy above 8 kHz per class,
    # and only then silences the warning; the filterbank's frequency axis is in kHz, not "mel band".
    nb = load("01_embedding_extraction")
    sources = [cell.source for cell in code_cells(nb)]
    shown = next(i for i, s in enumerate(sources) if "catch_warnings(record=True)" in s and "load_audio" in s)
    silenced = [i for i, s in enumerate(sources) if 'filterwarnings("ignore", category=HighFrequencyContentWarning)' in s]
    measured = next(i for i, s in enumerate(sources) if "energy above 8 kHz per class" in s)
    assert silenced and shown < measured <= min(silenced)
    for name in NAMES:
        for source in (cell.source for cell in code_cells(load(name))):
            assert 'set_ylabel("mel band")' not in source, name


def test_fine_tuning_uses_the_package_precision_and_quiets_lightning():
    nb = load("03_fine_tuning")
    source = "\n".join(cell.source for cell in code_cells(nb))
    assert "precision=default_precision()" in source and '"bf16-mixed" if' not in source
    assert 'logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)' in source


def test_evaluation_states_the_training_data_overlap_and_uses_the_card_metric_names():
    nb = load("04_evaluation")
    prose = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "post-trained on" in prose and "**overstate**" in prose
    source = "\n".join(cell.source for cell in code_cells(nb))
    assert "CARD_METRIC_NAMES[" in source and "UNSEEN_SUBSET" in code_cells(nb)[0].source
