"""What the tutorial notebooks in ``notebooks/`` share: the mode switch, the checkout, figures and the data.

The notebooks run in one of two modes, chosen by ``AVEX_HUB_TUTORIAL_MODE``:

* ``real`` (the default): the published weights and the ``watkins`` subset of BEANS-Zero, fetched once with
  :func:`fetch_beans_zero`;
* ``ci``: the tiny test checkpoint of a checkout of this repository (found by :func:`find_repo_root`) and a
  synthetic dataset.

:func:`tutorial_mode` validates the setting and never picks a mode on its own. :class:`FigureLog` displays each
figure as an inline PNG (refusing one that does not render) and keeps its title, so the last cell of a notebook
can list every figure it showed. pyarrow, fsspec, IPython and matplotlib are imported only when a function needs
them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .outputs import atomic_path

__all__ = ["MODES", "MODE_VARIABLE", "BEANS_ZERO", "tutorial_mode", "find_repo_root", "FigureLog", "show",
           "fetch_beans_zero"]

MODES = ("real", "ci")
MODE_VARIABLE = "AVEX_HUB_TUTORIAL_MODE"
BEANS_ZERO = "hf://datasets/EarthSpeciesProject/BEANS-Zero"
TINY_CHECKPOINT = "tests/fixtures/beats-tiny"  # relative to the checkout
COLAB_CHECKOUT = Path("/content/avex")  # where the notebooks' install cell clones the repository on Colab
_COLUMNS = ("id", "dataset_name", "audio", "output", "metadata")


def tutorial_mode(value: str | None = None) -> str:
    """Return the tutorial mode, ``"real"`` or ``"ci"``.

    ``value`` is the mode to check; ``None`` reads ``AVEX_HUB_TUTORIAL_MODE`` (``"real"`` when it is unset).
    Any other value, an empty one included, raises ``ValueError``: no mode is chosen in place of a wrong one.
    """
    if value is None:
        value = os.environ.get(MODE_VARIABLE, "real")
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be 'real' or 'ci', got {value!r}: set the environment variable "
                         f"(or MODE in the notebook's parameters cell) to one of them")
    return value


def find_repo_root(candidates: Iterable[str | os.PathLike] | None = None) -> Path:
    """Return the first of ``candidates`` that is a checkout of this repository with its tiny test checkpoint.

    A checkout holds ``hubconf.py`` and ``tests/fixtures/beats-tiny/``. The default candidates are the parent
    of the working directory (a notebook opened from ``notebooks/``), the working directory itself, and
    ``/content/avex`` (the clone made on Colab). Raises ``FileNotFoundError`` naming the folders searched.
    """
    if candidates is None:
        candidates = (Path.cwd().parent, Path.cwd(), COLAB_CHECKOUT)
    searched = [Path(c).expanduser() for c in candidates]
    for root in searched:
        if (root / "hubconf.py").is_file() and (root / TINY_CHECKPOINT).is_dir():
            return root
    raise FileNotFoundError(
        f"ci mode needs a checkout of https://github.com/earthspecies/avex (for {TINY_CHECKPOINT}); none of "
        f"{[str(p) for p in searched]} holds hubconf.py and {TINY_CHECKPOINT}/. Clone it and open the notebook "
        f"from its notebooks/ folder, or set {MODE_VARIABLE}=real")


class FigureLog:
    """The titles of the figures displayed so far, in order; ``len`` and iteration give them back.

    ``log.show(fig, title)`` is :func:`show` recording into this log.
    """

    def __init__(self) -> None:
        self.titles: list[str] = []

    def show(self, fig, title: str) -> None:
        """Display ``fig`` as an inline PNG and record ``title`` (see :func:`show`)."""
        show(fig, title, self)

    def __len__(self) -> int:
        return len(self.titles)

    def __iter__(self) -> Iterator[str]:
        return iter(self.titles)

    def __repr__(self) -> str:
        return f"FigureLog({self.titles!r})"


def show(fig, title: str, log: FigureLog | None = None) -> None:
    """Display the matplotlib figure ``fig`` inline as PNG, close it, and append ``title`` to ``log``.

    Needs a running IPython kernel. Raises ``RuntimeError`` when there is none or when the figure does not
    render as PNG (which happens without ``%matplotlib inline``), so a notebook never goes on without its figure.
    """
    if not isinstance(title, str) or not title:
        raise TypeError(f"title must be a non-empty string, got {title!r}")
    import matplotlib.pyplot as plt
    from IPython import get_ipython
    from IPython.display import display

    shell = get_ipython()
    if shell is None:
        raise RuntimeError(f"figure {title!r}: show() displays figures in a Jupyter notebook; there is no IPython "
                           "kernel here (use fig.savefig to keep a figure from a script)")
    data, metadata = shell.display_formatter.format(fig)
    if "image/png" not in data:
        raise RuntimeError(f"figure {title!r} did not render as PNG (formats: {sorted(data)}); run the notebook "
                           "in Jupyter after %matplotlib inline")
    display(data, raw=True, metadata=metadata)
    plt.close(fig)  # otherwise the inline backend displays it a second time at the end of the cell
    if log is not None:
        log.titles.append(title)


def fetch_beans_zero(subset: str, root: str | os.PathLike, *, source: str = BEANS_ZERO, seed: int = 0,
                     fractions: Sequence[float] = (0.7, 0.15, 0.15), progress: bool = True) -> Path:
    """Write the BEANS-Zero clips of one source dataset as WAV files with a split manifest; return its path.

    ``source`` is a folder or fsspec URL holding BEANS-Zero's ``shard*.parquet`` files (searched recursively;
    the default reads the Hub through ``hf://`` with HTTP range requests). Only the ``dataset_name`` column is
    read to find the rows whose ``dataset_name`` is ``subset``, then only their ``id``, ``audio``, ``output``
    (label) and ``metadata`` (JSON with ``sample_rate`` or ``sampling_rate``) columns. Each clip is written at
    its own sample rate as ``root/clips/<label>/<id>.wav`` (float WAV, exact samples); ``root/manifest.csv``
    has columns ``path`` (relative to ``root``), ``label`` and ``split``. The split is drawn per species with
    ``seed``: ``fractions`` of train/val/test, at least one clip in val and in test for species with three clips
    or more, all clips in train for smaller ones. The manifest is written last and atomically, so a finished
    manifest is returned as it is (nothing read again) and an interrupted run starts over.

    Raises ``FileNotFoundError`` when ``source`` cannot be listed or holds no shards, ``ValueError`` for bad
    ``fractions``, a shard without the needed columns, a row without a sample rate, or no row of ``subset``.
    """
    if not isinstance(subset, str) or not subset:
        raise TypeError(f"subset must be a BEANS-Zero dataset_name such as 'watkins', got {subset!r}")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative train/val/test fractions summing to 1, "
                         f"got {fractions}")
    root = Path(root).expanduser()
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return manifest
    import fsspec
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import soundfile as sf
    from tqdm.auto import tqdm

    try:
        fs, base = fsspec.core.url_to_fs(source)  # hf:// -> huggingface_hub's HfFileSystem
        found = fs.find(base)
    except Exception as err:  # each fsspec backend raises its own transport errors (httpx, aiohttp, OSError)
        raise FileNotFoundError(f"could not list BEANS-Zero shards in {source} ({type(err).__name__}: {err}); "
                                "check the network, and for the Hub accept the dataset's terms and log in "
                                "(hf auth login or HF_TOKEN)") from err
    shards = sorted(p for p in found if p.rsplit("/", 1)[-1].startswith("shard") and p.endswith(".parquet"))
    if not shards:
        raise FileNotFoundError(f"no shard*.parquet files in {source}: point source at BEANS-Zero's shards")
    rows = []  # [path relative to root, label], in shard order
    for shard in tqdm(shards, desc=f"BEANS-Zero shards searched for {subset!r}", unit="shard", disable=not progress):
        with fs.open(shard, "rb") as f:
            parquet = pq.ParquetFile(f)
            missing = [c for c in _COLUMNS if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(f"{shard}: no column(s) {missing}; a BEANS-Zero shard has {list(_COLUMNS)}")
            for group in range(parquet.num_row_groups):
                keep = pc.equal(parquet.read_row_group(group, columns=["dataset_name"])["dataset_name"], subset)
                if pc.any(keep).as_py():
                    table = parquet.read_row_group(group, columns=["id", "audio", "output", "metadata"])
                    rows += _write_clips(table.filter(keep), root, shard, sf)
    if not rows:
        raise ValueError(f"no rows with dataset_name == {subset!r} in the {len(shards)} shards of {source}")
    split = _split([label for _, label in rows], seed, fractions)
    text = io.StringIO(newline="")
    csv.writer(text).writerows([["path", "label", "split"]] + [row + [s] for row, s in zip(rows, split)])
    with atomic_path(manifest, ".csv") as tmp:  # the manifest appears only once every clip is written
        tmp.write_text(text.getvalue(), encoding="utf-8", newline="")
    return manifest


def _write_clips(table, root: Path, shard: str, sf) -> list[list[str]]:
    """Write each row of ``table`` (columns id, audio, output, metadata) as a WAV under ``root/clips``."""
    rows = []
    for i in range(table.num_rows):
        clip_id = table["id"][i].as_py()
        meta = json.loads(table["metadata"][i].as_py() or "{}")
        rate = meta.get("sample_rate", meta.get("sampling_rate"))
        if rate is None:
            raise ValueError(f"{shard}: row id {clip_id} has no sample_rate in its metadata {meta}")
        label = table["output"][i].as_py().strip()
        path = Path("clips") / label.replace("/", "-") / f"{clip_id}.wav"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        audio = table["audio"][i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        sf.write(root / path, audio, int(rate), subtype="FLOAT")
        rows.append([path.as_posix(), label])
    return rows


def _split(labels: list[str], seed: int, fractions: tuple[float, float, float]) -> list[str]:
    """Per-species seeded split of ``labels`` (one per clip): "train", "val" or "test" for each clip."""
    rng, split = np.random.default_rng(seed), [""] * len(labels)
    for label in sorted(set(labels)):  # sorted: the draws do not depend on the order species first appear
        members = [i for i, name in enumerate(labels) if name == label]
        n_test = max(1, round(fractions[2] * len(members))) if len(members) >= 3 else 0
        n_val = max(1, round(fractions[1] * len(members))) if len(members) >= 3 else 0
        for k, i in enumerate(rng.permutation(members)):
            split[i] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split
