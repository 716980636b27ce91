"""Structure of the tutorials in notebooks/ (nbval executes them; these checks are what execution cannot see).

- each notebook opens with a Colab badge to itself, an install cell and the parameters cell with the mode switch;
- it is committed clean: outputs only in ``# NBVAL_CHECK_OUTPUT`` cells, and those hold plain text that does not
  depend on the machine (no temporary paths) or on the mode;
- every figure is drawn through ``show(fig, title)`` (which refuses a figure that does not render as PNG), and the
  checked list of displayed figures in the last cells names exactly the figures the code draws, in order;
- the real-mode BEANS-Zero loader, the same in every notebook, works on a local stand-in of the parquet shards.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_embedding_extraction", "02_linear_probing", "03_fine_tuning", "04_evaluation"]
CHECK = "# NBVAL_CHECK_OUTPUT"


def load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def find_cell(nb, needle: str):
    found = [cell for cell in code_cells(nb) if needle in cell.source]
    assert len(found) == 1, f"expected one code cell containing {needle!r}, found {len(found)}"
    return found[0]


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
    # The mode is validated, and said, before anything else runs.
    setup = code_cells(nb)[2]
    assert "if MODE not in (\"real\", \"ci\")" in setup.source and "raise ValueError" in setup.source
    assert "%matplotlib inline" in setup.source


def test_shared_cells_are_identical_across_notebooks():
    notebooks = [load(name) for name in NAMES]
    for needle in ('MODE = os.environ.get("AVEX_HUB_TUTORIAL_MODE"', "def fetch_beans_zero(",
                   "torch.hub.load fetches the repository's hubconf.py"):
        sources = {find_cell(nb, needle).source for nb in notebooks}
        assert len(sources) == 1, f"the cell with {needle!r} differs between notebooks"


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


# -- the real-mode loader, on a local stand-in for the BEANS-Zero shards ------------------------------------------
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
sf = pytest.importorskip("soundfile")


def _fetch_function():
    source = find_cell(load(NAMES[0]), "def fetch_beans_zero(").source
    namespace = {"Path": Path, "np": np, "os": os, "BEANS_ZERO": "unused", "SEED": 0}
    exec(compile(source, "fetch_beans_zero", "exec"), namespace)  # noqa: S102 - our own notebook cell
    return namespace["fetch_beans_zero"]


def _shard(path: Path, groups: list[list[dict]]) -> None:
    schema = pa.schema([("id", pa.string()), ("dataset_name", pa.string()), ("audio", pa.list_(pa.float32())),
                        ("output", pa.string()), ("metadata", pa.string()), ("instruction_text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for rows in groups:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))  # one row group per call


def _row(i: int, subset: str, label: str, rate_key: str = "sample_rate", rate: int = 44100) -> dict:
    audio = np.random.default_rng(i).uniform(-0.5, 0.5, 800 + 37 * i).astype(np.float32)
    return {"id": f"{subset}-{i}", "dataset_name": subset, "audio": audio.tolist(), "output": f" {label} ",
            "metadata": json.dumps({rate_key: rate}), "instruction_text": "What species is this?"}


@pytest.fixture()
def beans(tmp_path):
    source = tmp_path / "beans-zero"
    source.mkdir()
    labels = ["Beluga, White Whale"] * 4 + ["Sperm Whale"] * 3 + ["Walrus"]
    watkins = [_row(i, "watkins", label, "sample_rate" if i % 2 else "sampling_rate", 44100 if i % 3 else 16000)
               for i, label in enumerate(labels)]
    _shard(source / "shard-00000.parquet", [[_row(90, "esc50", "dog"), *watkins[:3], _row(91, "esc50", "cat")],
                                             [_row(92, "esc50", "rain")]])
    (source / "more").mkdir()  # shards in a sub-folder are found too
    _shard(source / "more" / "shard-00001.parquet", [watkins[3:]])
    (source / "README.md").write_text("not a shard")
    return source, watkins


def test_fetch_beans_zero_writes_the_subset_and_a_split_manifest(beans, tmp_path):
    source, watkins = beans
    fetch = _fetch_function()
    manifest = fetch("watkins", tmp_path / "out", source=str(source), seed=3)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_id = {Path(row["path"]).stem: row for row in rows}  # clips/<label>/<id>.wav
    assert sorted(by_id) == sorted(w["id"] for w in watkins) and len(rows) == len(watkins)
    for original in watkins:
        row = by_id[original["id"]]
        assert row["label"] == original["output"].strip()
        assert Path(row["path"]).parent.name == row["label"]
        audio, rate = sf.read(manifest.parent / row["path"], dtype="float32")
        assert rate == json.loads(original["metadata"]).popitem()[1]
        np.testing.assert_array_equal(audio, np.asarray(original["audio"], dtype=np.float32))
    splits = {}
    for row in rows:
        splits.setdefault(row["label"], []).append(row["split"])
    # 70/15/15 per species with at least 3 clips; a species with fewer stays in train.
    assert sorted(splits["Beluga, White Whale"]) == ["test", "train", "train", "val"]
    assert sorted(splits["Sperm Whale"]) == ["test", "train", "val"]
    assert splits["Walrus"] == ["train"]
    # A finished manifest is reused without reading the source again; the same seed gives the same split.
    assert fetch("watkins", tmp_path / "out", source=str(tmp_path / "gone")) == manifest
    again = fetch("watkins", tmp_path / "again", source=str(source), seed=3)
    assert again.read_text() == manifest.read_text()
    assert not list((tmp_path / "out").glob("*.partial"))


def test_fetch_beans_zero_reports_what_is_missing(beans, tmp_path):
    source, _ = beans
    fetch = _fetch_function()
    with pytest.raises(ValueError, match="no rows with dataset_name == 'hiceas'"):
        fetch("hiceas", tmp_path / "none", source=str(source))
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "README.md").write_text("no shards here")
    with pytest.raises(FileNotFoundError, match="no shard"):
        fetch("watkins", tmp_path / "empty", source=str(nothing))
    bad = tmp_path / "bad"
    bad.mkdir()
    row = _row(5, "watkins", "Walrus")
    row["metadata"] = "{}"
    _shard(bad / "shard-0.parquet", [[row]])
    with pytest.raises(ValueError, match="no sample_rate"):
        fetch("watkins", tmp_path / "bad-out", source=str(bad))
    assert not (tmp_path / "bad-out" / "manifest.csv").exists()
