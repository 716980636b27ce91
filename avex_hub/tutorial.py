"""What the tutorial notebooks in ``notebooks/`` share: the mode switch, the checkout, figures and the data.

The notebooks run in one of two modes, chosen by ``AVEX_HUB_TUTORIAL_MODE``:

* ``real`` (the default): the published weights and the ``watkins`` subset of BEANS-Zero, fetched once with
  :func:`fetch_beans_zero`;
* ``ci``: the tiny test checkpoint of a checkout of this repository (found by :func:`find_repo_root`) and a
  synthetic dataset.

:func:`tutorial_mode` validates the setting and never picks a mode on its own. :class:`FigureLog` displays each
figure as an inline PNG (refusing one that does not render) and keeps its title, so the last cell of a notebook
can list every figure it showed. :func:`load_model` and :func:`load_data` are the model and the data of a mode,
so the notebooks share one setup instead of repeating it. :func:`mel_band_hz` and :func:`mel_axis_khz` put the
model's filterbank on a frequency axis. torch, pyarrow, fsspec, IPython and matplotlib are imported only when a
function needs them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .embed.outputs import atomic_path

__all__ = ["MODES", "MODE_VARIABLE", "BEANS_ZERO", "BEANS_ZERO_REPOSITORY", "BEANS_ZERO_REVISION", "tutorial_mode",
           "find_repo_root", "FigureLog", "show", "fetch_beans_zero", "TutorialData", "load_model", "load_data",
           "mel_band_hz", "mel_axis_khz"]

MODES = ("real", "ci")
MODE_VARIABLE = "AVEX_HUB_TUTORIAL_MODE"
BEANS_ZERO_REPOSITORY = "EarthSpeciesProject/BEANS-Zero"  # a dataset repository on the Hugging Face Hub
# The one pin of the BEANS-Zero revision the tutorials read: the dataset repository's commit hash (40 hex digits), so
# that a new upload cannot change their data unnoticed. Empty: not known yet. The machine this was written on does
# not reach the Hub, so no hash could be read, and none is guessed; until it is set, real mode reads the newest
# revision. `AVEX_HUB_NETWORK_TESTS=1 pytest tests/test_tutorial.py -k hub -s` prints the hash to put here.
BEANS_ZERO_REVISION = ""
BEANS_ZERO = f"hf://datasets/{BEANS_ZERO_REPOSITORY}" + (f"@{BEANS_ZERO_REVISION}" if BEANS_ZERO_REVISION else "")
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


def load_model(mode: str, device=None, repo_root: str | os.PathLike | None = None):
    """The model a tutorial runs on, through ``torch.hub.load`` as a reader would load it.

    ``"real"``: the published ``esp_aves2_sl_beats_all`` weights (repository ``earthspecies/avex``, weights from the
    Hugging Face Hub, SHA-256 verified). ``"ci"``: the same entry point of the checkout ``repo_root`` (default
    :func:`find_repo_root`) with its tiny test checkpoint. ``device=None`` keeps the model on the CPU.
    """
    import torch

    if tutorial_mode(mode) == "real":
        return torch.hub.load("earthspecies/avex", "esp_aves2_sl_beats_all", trust_repo=True, device=device)
    root = find_repo_root() if repo_root is None else Path(repo_root)
    return torch.hub.load(str(root), "esp_aves2_sl_beats_all", source="local", device=device,
                          checkpoint=str(root / TINY_CHECKPOINT))


@dataclass(frozen=True)
class TutorialData:
    """A tutorial's dataset: ``manifest`` (columns path, label, split), the clip length ``clip_s`` the notebooks
    crop or pad to, and in ci mode the :class:`avex_hub.audio.synthetic.SyntheticDataset` (``None`` in real mode)."""

    manifest: Path
    clip_s: float
    synthetic: object | None = None


def load_data(mode: str, work: str | os.PathLike, *, seed: int = 0, source: str | None = None,
              long_recordings: int = 0) -> TutorialData:
    """The data of a mode, written under ``work``: the ``watkins`` subset of BEANS-Zero (``"real"``, through
    :func:`fetch_beans_zero` from ``source``, default the Hub; clips of up to 3 s) or a synthetic dataset of 5
    species, 120 clips of 2 s at 16 and 44.1 kHz (``"ci"``), with ``long_recordings`` annotated 60 s recordings
    (ci mode only)."""
    work = Path(work).expanduser()
    if tutorial_mode(mode) == "real":
        return TutorialData(fetch_beans_zero("watkins", work / "beans-zero-watkins", source=source, seed=seed), 3.0)
    from .audio.synthetic import make_synthetic_dataset

    synthetic = make_synthetic_dataset(work / "synthetic", num_species=5, individuals_per_species=3,
                                       clips_per_individual=8, clip_s=2.0, sample_rate=[16000, 44100], seed=seed,
                                       num_long_recordings=long_recordings, long_recording_s=60)
    return TutorialData(synthetic.manifest, 2.0, synthetic)


def mel_band_hz(config=None) -> np.ndarray:
    """Centre frequency (Hz) of each band of the model's log-mel filterbank, lowest first.

    ``config`` is an :class:`avex_hub.encoder.fbank.FbankConfig` (default: the one every esp-aves2 BEATs model uses, 128
    bands from 20 Hz to the Nyquist frequency of 16 kHz audio, 8 kHz). Kaldi spaces the band edges evenly on the
    mel scale, ``mel = 1127 ln(1 + f / 700)``: the bands are narrow at low frequencies and wide at high ones.
    """
    from .encoder.fbank import FbankConfig

    config = FbankConfig() if config is None else config
    high = config.high_freq if config.high_freq > 0 else config.sample_rate / 2 + config.high_freq
    low_mel, high_mel = (1127.0 * np.log1p(f / 700.0) for f in (config.low_freq, high))
    centres = low_mel + (high_mel - low_mel) * np.arange(1, config.num_mel_bins + 1) / (config.num_mel_bins + 1)
    return 700.0 * np.expm1(centres / 1127.0)


def mel_axis_khz(ax, axis: str = "y", ticks_khz: Sequence[float] = (0.1, 0.5, 1, 2, 4, 8), config=None) -> None:
    """Label the band axis of a filterbank image in kHz.

    The image must be drawn with band ``k`` covering ``[k, k + 1]`` on ``axis`` (``imshow(..., origin="lower",
    extent=[..., 0, 128])``). Ticks go at the bands whose centre is ``ticks_khz``; the label says "kHz (mel scale)".
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    centres = mel_band_hz(config)
    positions = np.interp(np.asarray(ticks_khz, dtype=float) * 1000.0, centres, np.arange(len(centres)) + 0.5)
    labels = [f"{k:g}" for k in ticks_khz]
    if axis == "y":
        ax.set_yticks(positions, labels)
        ax.set_ylabel("frequency (kHz, mel scale)")
    else:
        ax.set_xticks(positions, labels)
        ax.set_xlabel("frequency (kHz, mel scale)")


def fetch_beans_zero(subset: str, root: str | os.PathLike, *, source: str | None = None, seed: int = 0,
                     fractions: Sequence[float] = (0.7, 0.15, 0.15), progress: bool = True) -> Path:
    """Write the BEANS-Zero clips of one source dataset as WAV files with a split manifest; return its path.

    BEANS-Zero as published: one ``test`` split of about 92,000 clips from 22 source datasets (``dataset_name``:
    ``watkins``, ``humbugdb``, ``esc50``, ``cbi``, ``enabirds``, ``hiceas``, ``rfcx``, ``gibbons``, ``dcase``, ...),
    about 100 GB of parquet shards in full; one source is a small part of that, and only its rows' audio is read.

    ``source`` is a folder or fsspec URL holding BEANS-Zero's ``shard*.parquet`` files (searched recursively;
    ``None``, the default, is :data:`BEANS_ZERO`: the Hub through ``hf://`` with HTTP range requests, at the
    revision pinned in :data:`BEANS_ZERO_REVISION` once it is known). Only the ``dataset_name`` column is
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
    source = BEANS_ZERO if source is None else source
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
