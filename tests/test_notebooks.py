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
import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))  # every tutorial, checked alike
CHECK = "# NBVAL_CHECK_OUTPUT"


def load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module", params=NAMES)
def notebook(request):
    return request.param, load(request.param)


def test_every_tutorial_is_listed_and_no_text_counts_them():
    # The course grows (06 monitoring, 07 exploring an archive): each notebook has a row in the tutorials' overview
    # and in README, and no text says how many there are ("four tutorials" outlived the fifth).
    assert {"01_embedding_extraction", "04_evaluation", "07_exploring_an_archive"} <= set(NAMES)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    overview = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    tutorials_section = readme.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    for name in NAMES:
        assert f"| [{name}]({name}.ipynb) |" in overview, f"add a row for {name} to notebooks/README.md"
        assert f"`{name}`" in tutorials_section, f"name {name} in README's Tutorials section"
    counted = re.compile(r"\b(two|three|four|five|six|seven|eight|nine|ten) (tutorials|notebooks)\b", re.I)
    texts = {"README.md": readme, "notebooks/README.md": overview}
    texts.update({name: "\n".join(c.source for c in load(name).cells) for name in NAMES})
    for where, text in texts.items():
        assert not counted.search(text), f"{where}: {counted.search(text).group(0)!r}"


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
    # Runtimes for a named machine at rest, the same figure as the overview's table (which says how it was measured).
    stated = re.search(r"ci mode: (about )?(\d+) s under nbval on a quiet 2-core AMD EPYC", first)
    assert stated, f"{name}: state the ci-mode time on a quiet named machine"
    assert "load average above" not in first and "notebooks/README.md#runtimes" in first
    overview = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    row = next(line for line in overview.splitlines() if line.startswith(f"| {name} | "))
    assert row.split(" | ")[1].startswith(f"{stated.group(1) or ''}{stated.group(2)} s"), (row, stated.group(0))


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


def test_fine_tuning_gives_the_one_ddp_advice_that_full_fine_tuning_needs(tiny_dir, one_torch_thread):
    # With unfreeze="all" the published layer drop (0.05) skips a whole transformer layer in some steps; that layer's
    # weights then get no gradient, which plain strategy="ddp" refuses ("parameters that were not used in producing
    # the loss"). Notebook 03 and README give one advice: ddp_find_unused_parameters_true (tests/test_ddp.py runs it).
    pytest.importorskip("lightning")
    import torch

    import avex_hub
    from avex_hub.hub.weights import get_weights
    from avex_hub.integrations.lightning import AvexClassifier

    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    published = get_weights("esp_aves2_sl_beats_all").config.encoder_layerdrop
    assert published > 0 and model.backbone.encoder.layerdrop == published  # the tiny config copies it
    module = AvexClassifier(model, labels=["a", "b"], unfreeze="all", seed=0)
    module.train()
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    unused_per_step = []
    for step in range(60):  # seeded draws: about one step in seven drops a layer of the three
        model.zero_grad(set_to_none=True)
        torch.manual_seed(step)
        model.logits(audio).sum().backward()
        unused_per_step.append({name.split(".")[3] for name, p in model.named_parameters()
                                if p.requires_grad and p.grad is None and name.startswith("backbone.encoder.layers.")})
    dropped = [step for step, unused in enumerate(unused_per_step) if unused]
    assert dropped and len(dropped) < len(unused_per_step), dropped  # some steps, not all
    assert all(len(unused_per_step[step]) >= 1 for step in dropped)

    nb = load("03_fine_tuning")
    text = "\n".join(cell.source for cell in nb.cells)
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    advice = 'strategy="ddp_find_unused_parameters_true"'
    assert advice in text and advice in readme
    assert 'devices=4, strategy="ddp"' not in text and 'num_nodes=2, strategy="ddp")' not in readme


def test_nbvals_run_is_written_for_the_docs_build_and_measured(tmp_path):
    # notebooks/conftest.py: with AVEX_HUB_EXECUTED_NOTEBOOKS set, each notebook that passed is written with the
    # outputs nbval received (what docs/build.py --executed shows); one with a failing cell is not written.
    import os
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "nbs"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "conftest.py", folder / "conftest.py")
    good = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})
    good.cells = [nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("print('hello')"),
                  nbformat.v4.new_code_cell("from IPython.display import display, HTML\n"
                                            "display(HTML('<b>x</b>'))\n2 + 3")]
    nbformat.write(good, folder / "01_good.ipynb")
    bad = nbformat.from_dict(json.loads(json.dumps(good)))
    bad.cells[2].source = "1 / 0"
    nbformat.write(bad, folder / "02_bad.ipynb")
    out = tmp_path / "executed"
    env = {**os.environ, "AVEX_HUB_EXECUTED_NOTEBOOKS": str(out), "AVEX_HUB_TUTORIAL_MODE": "ci"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--rootdir", str(folder), str(folder)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 1, result.stdout[-3000:]  # the bad notebook fails
    assert sorted(p.name for p in out.iterdir()) == ["01_good.ipynb"]
    executed = nbformat.read(out / "01_good.ipynb", as_version=4)
    nbformat.validate(executed)
    first, second = (c for c in executed.cells if c.cell_type == "code")
    assert first.outputs[0].text == "hello\n" and first.execution_count == 1
    assert second.outputs[0].data["text/html"] == "<b>x</b>" and second.outputs[1].data["text/plain"] == "5"
    assert second.outputs[1].execution_count == 2
    run = executed.metadata["avex_hub_run"]
    assert run["mode"] == "ci" and run["seconds"] > 0 and run["peak_rss_mib"] > 10 and 0 < run["cpu_s"] < 300
    assert nbformat.read(folder / "01_good.ipynb", as_version=4).cells[1].outputs == []  # the source is untouched
    summary = result.stdout.split("notebooks: wall time")[1]
    assert "01_good.ipynb: " in summary and "(ci mode, ok)" in summary and "02_bad.ipynb" in summary
    assert "(ci mode, FAILED)" in summary



def test_the_card_numbers_shown_come_from_their_one_home():
    # avex_hub.hub.card holds the model card's results; notebook 04 prints them from there (no copy typed into a
    # notebook or the overview) and README's table holds exactly its rows.
    from avex_hub.hub.card import CARD_RESULTS, PAPER

    source = "\n".join(cell.source for cell in code_cells(load("04_evaluation")))
    assert "from avex_hub.hub.card import" in source and "CARD_RESULTS" in source and "card_result(" in source
    assert "PAPER.citation()" in source
    scores = {f"{row.score:.3f}" for row in CARD_RESULTS} | {f"{row.score:.2f}" for row in CARD_RESULTS}
    overview = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for name, text in [(n, "\n".join(c.source for c in load(n).cells)) for n in NAMES] + [("overview", overview)]:
        typed = sorted(score for score in scores if re.search(rf"(?<![\d.]){re.escape(score)}(?!\d)", text))
        assert not typed, f"{name} types the card's numbers {typed}: print them from avex_hub.hub.card"
    prose = "\n".join(cell.source for cell in load("04_evaluation").cells if cell.cell_type == "markdown")
    assert PAPER.arxiv in prose and PAPER.title in prose and "not comparable" in prose
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The model card's results beside ours", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert rows == [f"| {r.title} | {r.task} | {r.metric} | {r.score:.3f} |" for r in CARD_RESULTS]
    assert PAPER.arxiv in section and "not comparable" in section


def test_beans_zero_is_read_from_one_source_with_one_revision_pin():
    # The Hub address and the revision pin live in avex_hub.tutorial only; the notebooks pass BEANS_ZERO = None
    # (or a local folder). The pin is a commit hash once known and empty until then, never a branch name or a guess.
    from avex_hub import tutorial

    assert tutorial.BEANS_ZERO_REVISION == "" or re.fullmatch(r"[0-9a-f]{40}", tutorial.BEANS_ZERO_REVISION)
    expected = f"hf://datasets/{tutorial.BEANS_ZERO_REPOSITORY}"
    assert tutorial.BEANS_ZERO == (expected + f"@{tutorial.BEANS_ZERO_REVISION}" if tutorial.BEANS_ZERO_REVISION
                                   else expected)
    for name in NAMES:
        text = "\n".join(cell.source for cell in load(name).cells)
        assert "hf://" not in text, f"{name} holds its own copy of the BEANS-Zero address"
        parameters = code_cells(load(name))[0].source
        if "BEANS_ZERO" in parameters:
            assert "BEANS_ZERO = None" in parameters
    prose = "\n".join(cell.source for cell in load("04_evaluation").cells if cell.cell_type == "markdown")
    assert "92,000 clips" in prose and "100 GB" in prose and "BEANS_ZERO_REVISION" in prose
    assert "92,000 clips" in tutorial.fetch_beans_zero.__doc__ and "100 GB" in tutorial.fetch_beans_zero.__doc__
