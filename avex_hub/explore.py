"""Explore an archive of recordings through its window embeddings: read them, map them in 2-D, cluster them, and
pick the windows worth listening to.

    from avex_hub import explore
    windows = explore.read_windows("windows.parquet")   # `avex-hub embed` output (.parquet, .npz) or an agile archive
    labels = explore.labels_from_annotations(windows, "annotations.csv")   # where calls are annotated
    explore.add_times_and_sites(windows, deployments="deployments.csv")   # columns site, start_time, hour
    view = explore.map_2d(windows.embeddings)           # UMAP when umap-learn is installed, else PCA
    clusters = explore.cluster(windows.embeddings, k=8)  # k-means (or method="hdbscan")
    explore.score_clusters(clusters, labels)             # NMI against the labels, and its chance level
    explore.central_windows(windows.embeddings, clusters, per_cluster=3)   # what to listen to first
    explore.window_audio(windows, 0)                     # one window's audio, 16 kHz mono
    explore.MapExplorer(windows, view.points, labels).widget()   # Jupyter: hover names file and time, click plays

Embeddings are compared by cosine similarity, as retrieval and the agile search do: the map, the clusters and the
central windows all work on L2-normalised embeddings. The map's PCA needs nothing beyond numpy; UMAP
(``umap-learn``, in the ``notebooks`` extra) and the clusters (scikit-learn) load on first use, and the interactive map
needs ``ipympl`` (matplotlib's Jupyter widget backend).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .audio.arrays import SAMPLE_RATE

__all__ = ["Windows", "read_windows", "labels_from_annotations", "labels_from_folders", "add_times_and_sites", "Map2D",
           "map_2d",
           "cluster", "ClusterScore", "score_clusters", "central_windows", "window_audio", "draw_spectrogram",
           "MapExplorer", "MAP_METHODS"]

MAP_METHODS = ("auto", "umap", "pca")
# The file an agile archive folder holds: perch-hoplite's HOPLITE_FILENAME, named here so that telling an archive
# folder from another needs no perch-hoplite (tests/test_explore.py checks it against hoplite's).
_ARCHIVE_FILE = "hoplite.sqlite"


@dataclass
class Windows:
    """The windows of an archive, one row each: where it is (``file``, ``channel``, ``start_s``, ``end_s``), its
    embedding (``embeddings``, float32 ``[windows, dim]``), the settings that made the embeddings, and ``columns``:
    anything else known per window (``"label"``; a recording ``"site"`` or ``"hour"`` of day where known)."""

    file: np.ndarray
    channel: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    embeddings: np.ndarray
    settings: dict = field(default_factory=dict)
    source: str = ""
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.file)
        for name in ("channel", "start_s", "end_s", "embeddings"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.source or 'windows'}: {n} files but {len(getattr(self, name))} {name}")
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected [windows, dim], found shape {self.embeddings.shape}")
        for name, values in self.columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r}: {len(values)} values for {n} windows")

    def __len__(self) -> int:
        return len(self.file)

    def describe(self, i: int) -> str:
        """One line naming window ``i``: its file's name, its time span and its label, if any."""
        label = str(self.columns.get("label", [""] * len(self))[i])
        channel = f" channel {self.channel[i]}" if self.channel[i] >= 0 else ""
        return (f"{Path(str(self.file[i])).name}{channel} {self.start_s[i]:.1f}-{self.end_s[i]:.1f} s"
                + (f" ({label})" if label else ""))


def read_windows(path: str | os.PathLike, *, layer: int | None = None) -> Windows:
    """The windows of an ``avex-hub embed`` output (``.parquet`` or ``.npz``) or of an agile archive folder
    (``avex-hub index --db``; its labels become the ``"label"`` column).

    An output with several layers (``--layers 6,-1``) needs ``layer=``, one of the layers it holds (ValueError
    listing them otherwise). FileNotFoundError when ``path`` is none of these.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / _ARCHIVE_FILE).is_file():
            raise FileNotFoundError(f"{path} is a folder but holds no agile archive ({_ARCHIVE_FILE}); give an "
                                    "`avex-hub embed` output (.parquet, .npz) or an `avex-hub index --db` folder")
        return _read_archive(path)
    if not path.is_file():
        raise FileNotFoundError(f"no embeddings at {path}: give an `avex-hub embed` output (.parquet, .npz) or an "
                                "agile archive folder")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("file", "channel", "start_s", "end_s", "layer", "embeddings")}
            settings = json.loads(str(data["settings"]))
    elif path.suffix == ".parquet":
        arrays, settings = _read_parquet(path)
    else:
        raise ValueError(f"{path}: expected a .parquet or .npz output of `avex-hub embed`, or an archive folder")
    keep = _one_layer(arrays["layer"], layer, path)
    return Windows(np.asarray(arrays["file"], dtype=object)[keep], np.asarray(arrays["channel"])[keep],
                   np.asarray(arrays["start_s"], np.float64)[keep], np.asarray(arrays["end_s"], np.float64)[keep],
                   np.asarray(arrays["embeddings"], np.float32)[keep], settings, str(path))


def _read_parquet(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["file", "channel", "start_s", "end_s", "layer", "embedding"])
    embedding = table["embedding"].combine_chunks()
    dim = embedding.type.list_size
    arrays = {name: table[name].to_numpy() for name in ("channel", "start_s", "end_s", "layer")}
    arrays["file"] = np.array(table["file"].to_pylist(), dtype=object)
    arrays["embeddings"] = embedding.flatten().to_numpy().reshape(-1, dim)
    metadata = table.schema.metadata or {}
    return arrays, json.loads(metadata.get(b"avex_hub", b"{}"))


def _one_layer(layers: np.ndarray, layer: int | None, path: Path) -> np.ndarray:
    present = sorted({int(v) for v in np.unique(layers)})
    if layer is None:
        if len(present) > 1:
            raise ValueError(f"{path} holds the embeddings of layers {present}: pick one with layer=")
        return np.ones(len(layers), bool)
    if layer not in present:
        raise ValueError(f"{path} holds no layer {layer}; it holds layers {present} (numbered from the encoder's "
                         "input, 0, so -1 is stored as the model's last layer number)")
    return np.asarray(layers) == layer


def _read_archive(path: Path) -> Windows:
    from .integrations import agile  # perch-hoplite: the agile extra

    archive = agile.Archive.open(path, readonly=True)
    table = archive.window_table()
    ids = table["window_id"]
    labels = np.full(len(ids), "", dtype=object)
    labelled, targets, names = agile.labelled_windows(archive)
    row_of = {int(w): k for k, w in enumerate(ids)}
    for w, target in zip(labelled, targets):
        positive = [names[c] for c in np.flatnonzero(target == 1)]
        if len(positive) == 1 and int(w) in row_of:
            labels[row_of[int(w)]] = positive[0]
    columns = {"label": labels} if (labels != "").any() else {}
    return Windows(np.asarray(table["file"], dtype=object), np.asarray(table["channel"]),
                   np.asarray(table["start_s"], np.float64), np.asarray(table["end_s"], np.float64),
                   archive.vectors(ids), dict(archive.settings), str(path), columns)


def labels_from_annotations(windows: Windows, annotations: str | os.PathLike, *, root: str | os.PathLike | None = None,
                            min_overlap: float = 0.5, background: str = "") -> np.ndarray:
    """A label per window from a CSV of annotated calls (columns ``path`` or ``file``, ``label``, ``start_s``,
    ``end_s``; paths relative to ``root``, default the CSV's folder): the label of the call that overlaps the
    window most, if that overlap is at least ``min_overlap`` of the shorter of the two (half of a short call, or
    half of the window for a long one), else ``background``."""
    from .audio.intervals import overlap_seconds

    annotations = Path(annotations)
    root = annotations.parent if root is None else Path(root)
    with open(annotations, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"label", "start_s", "end_s"} <= set(rows[0]):
        raise ValueError(f"{annotations}: expected columns path (or file), label, start_s, end_s; "
                         f"found {list(rows[0])}")
    calls: dict[str, list[dict]] = {}
    for row in rows:
        name = row.get("path") or row.get("file")
        if name is None:
            raise ValueError(f"{annotations}: expected a path or file column; found {list(row)}")
        calls.setdefault(os.path.realpath(root / name), []).append(row)
    out = np.full(len(windows), background, dtype=object)
    for file in np.unique(windows.file):
        mine = calls.get(os.path.realpath(str(file)), [])
        rows_of_file = np.flatnonzero(windows.file == file)
        if not mine:
            continue
        starts = np.array([float(c["start_s"]) for c in mine])
        ends = np.array([float(c["end_s"]) for c in mine])
        overlap = overlap_seconds(windows.start_s[rows_of_file], windows.end_s[rows_of_file], starts, ends)
        shorter = np.minimum((windows.end_s - windows.start_s)[rows_of_file][:, None], (ends - starts)[None, :])
        overlap = np.where(overlap >= min_overlap * shorter, overlap, 0.0)
        best = overlap.argmax(axis=1)
        hit = overlap[np.arange(len(rows_of_file)), best] > 0
        out[rows_of_file[hit]] = [mine[k]["label"] for k in best[hit]]
    return out


def labels_from_folders(windows: Windows) -> np.ndarray:
    """A label per window: the name of its file's folder (recordings sorted into one folder per class)."""
    return np.array([Path(str(f)).parent.name for f in windows.file], dtype=object)


def add_times_and_sites(windows: Windows, *, deployments: str | os.PathLike | None = None,
                        time_pattern: str | None = None, timezone: str | None = None) -> list:
    """Add columns ``site``, ``start_time`` and ``hour`` to ``windows``: each recording's start and site as ``avex-hub
    times`` finds them (GUANO, AudioMoth metadata, ``time_pattern`` or the file name, local times in ``timezone``;
    sites from the ``deployments`` CSV). ``start_time``: the window's start, ISO 8601 with the recorder's offset (``""``
    unknown); ``hour``: its hour of day in the site's zone, else ``timezone``, else the recorder's (-1 unknown);
    ``site``: ``""`` outside every deployment. Returns each file's :class:`avex_hub.monitoring.recordings.Recording`."""
    from .monitoring.deployments import Deployments
    from .monitoring.recordings import describe_recordings
    from .monitoring.times import iso, parse_zone

    files, lengths = [str(f) for f in windows.file], {}
    for file, end in zip(files, windows.end_s):
        lengths[file] = max(lengths.get(file, 0.0), float(end))
    table = None if deployments is None else Deployments.read(deployments)
    recordings = describe_recordings(lengths, deployments=table, time_pattern=time_pattern, timezone=timezone)
    of_file = {r.file: r for r in recordings}
    zone = {r.file: parse_zone(r.time_zone or timezone) if r.time_zone or timezone else None for r in recordings}
    starts = [of_file[f].time_at(s) for f, s in zip(files, windows.start_s)]
    windows.columns["site"] = np.array([of_file[f].site or "" for f in files], dtype=object)
    windows.columns["start_time"] = np.array([iso(t) for t in starts], dtype=object)
    windows.columns["hour"] = np.array([-1 if t is None else t.astimezone(zone[f]).hour if zone[f] else t.hour
                                        for f, t in zip(files, starts)], dtype=np.int64)
    return recordings


def _unit(embeddings) -> np.ndarray:
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"embeddings: expected [windows, dim] with at least 2 windows, found shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; drop those windows first")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Map2D:
    """Window positions in 2-D (``points``), the ``method`` that made them and the axes' names."""

    points: np.ndarray
    method: str
    axes: tuple[str, str]


def map_2d(embeddings, method: str = "auto", *, seed: int = 0, n_neighbors: int = 15) -> Map2D:
    """Place every window in 2-D by its L2-normalised embedding: ``"pca"`` (the two directions of largest variance;
    numpy only; the axes say how much of the variance each holds), ``"umap"`` (``umap-learn``: keeps neighbourhoods,
    not distances, so cluster sizes and gaps mean little) or ``"auto"``: UMAP when umap-learn is installed."""
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
    x = _unit(embeddings)
    umap = _umap()
    if method == "auto":
        method = "pca" if umap is None else "umap"
    if method == "umap":
        if umap is None:
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn (the notebooks extra has it)"
                              ", or use method='pca'")
        points = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine",
                           random_state=seed).fit_transform(x)
        return Map2D(np.asarray(points, np.float64), "umap", ("UMAP 1 (no unit)", "UMAP 2 (no unit)"))
    centred = x - x.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    directions = directions[:2]
    largest = directions[np.arange(len(directions)), np.abs(directions).argmax(axis=1)]
    directions = directions * np.where(largest < 0, -1.0, 1.0)[:, None]  # a fixed sign: the same map every run
    share = singular[:2] ** 2 / max(float((singular ** 2).sum()), np.finfo(float).tiny)
    return Map2D(centred @ directions.T, "pca", tuple(f"PC{k + 1} ({s:.0%} of the variance)" for k, s in
                                                     enumerate(share)))


def _umap():
    """umap-learn's module, or None when it is not installed (or only a leftover folder of it is)."""
    try:
        import umap
    except ImportError:
        return None
    return umap if hasattr(umap, "UMAP") else None


def cluster(embeddings, k: int | None = None, *, method: str = "kmeans", seed: int = 0,
            min_cluster_size: int = 5) -> np.ndarray:
    """A cluster number per window (scikit-learn, on L2-normalised embeddings): ``"kmeans"`` with ``k`` clusters,
    or ``"hdbscan"``, which finds the number itself and marks windows in no dense group ``-1`` (noise)."""
    x = _unit(embeddings)
    if method == "kmeans":
        if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= len(x):
            raise ValueError(f"k-means needs k, an integer from 2 to the number of windows ({len(x)}); got {k!r}")
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(x).astype(np.int64)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        # copy=False: x is this function's own normalised copy, free to be overwritten
        return HDBSCAN(min_cluster_size=min_cluster_size, copy=False).fit_predict(x).astype(np.int64)
    raise ValueError(f"method must be 'kmeans' or 'hdbscan', got {method!r}")


@dataclass(frozen=True)
class ClusterScore:
    """NMI between clusters and labels over ``windows`` labelled windows, and ``chance``: the mean NMI of the same
    clusters against the labels shuffled (NMI is above 0 by chance alone, more so with many small clusters)."""

    nmi: float
    chance: float
    windows: int


def score_clusters(clusters, labels, *, seed: int = 0, shuffles: int = 20, unlabelled: str = "") -> ClusterScore:
    """Score ``clusters`` against ``labels`` by normalised mutual information (arithmetic mean of the entropies),
    over the windows whose label is not ``unlabelled``; HDBSCAN's noise (``-1``) counts as one more cluster."""
    from sklearn.metrics import normalized_mutual_info_score

    clusters, labels = np.asarray(clusters), np.asarray(labels, dtype=object)
    if clusters.shape != labels.shape:
        raise ValueError(f"{len(clusters)} cluster numbers but {len(labels)} labels; give one of each per window")
    keep = labels != unlabelled
    if keep.sum() < 2:
        raise ValueError(f"NMI needs at least 2 labelled windows; {int(keep.sum())} have a label")
    c, y = clusters[keep], labels[keep].astype(str)
    nmi = float(normalized_mutual_info_score(y, c, average_method="arithmetic"))
    rng = np.random.default_rng(seed)
    chance = float(np.mean([normalized_mutual_info_score(rng.permutation(y), c, average_method="arithmetic")
                            for _ in range(shuffles)]))
    return ClusterScore(nmi, chance, int(keep.sum()))


def central_windows(embeddings, clusters, per_cluster: int = 3) -> dict[int, np.ndarray]:
    """For each cluster (noise, ``-1``, left out), the rows of its ``per_cluster`` windows most similar (cosine)
    to the cluster's mean direction, most central first: the windows to listen to first."""
    x, clusters = _unit(embeddings), np.asarray(clusters)
    out = {}
    for c in sorted(int(v) for v in np.unique(clusters) if v >= 0):
        rows = np.flatnonzero(clusters == c)
        centre = x[rows].mean(axis=0)
        similarity = x[rows] @ (centre / max(np.linalg.norm(centre), np.finfo(float).tiny))
        out[c] = rows[np.argsort(-similarity, kind="stable")[:per_cluster]]
    return out


def window_audio(windows: Windows, i: int, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The audio of window ``i`` as the model heard it (its channel, or the mix; resampled to ``sample_rate``),
    read from its file; a window past the file's end is zero padded to its length."""
    from .audio.decoding import load_audio

    channel = int(windows.channel[i])
    audio = load_audio(str(windows.file[i]), target_rate=sample_rate, channels=channel if channel >= 0 else "mix",
                       start_s=float(windows.start_s[i]), end_s=float(windows.end_s[i]))
    samples = audio.waveform[0].numpy()
    length = int(round((windows.end_s[i] - windows.start_s[i]) * sample_rate))
    return np.pad(samples, (0, max(0, length - len(samples))))[:length].astype(np.float32)


def draw_spectrogram(ax, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """A spectrogram of ``audio`` on ``ax``: time in seconds, frequency in kHz up to the Nyquist frequency."""
    from matplotlib.ticker import FuncFormatter

    # Each time-frequency bin as a block (not smoothed): what the analysis holds, and a smaller PNG (notebook 07's
    # grid of spectrograms: 1.1 MB instead of 1.7 MB on the site).
    ax.specgram(audio, NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma", scale="dB", vmin=-120,
                interpolation="nearest")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda hz, _: f"{hz / 1000:g}"))
    ax.set_ylabel("frequency (kHz)")
    ax.set_xlabel("time (s)")


class MapExplorer:
    """The 2-D map of an archive's windows to explore by hand: hovering a point names its window (file, time,
    label), clicking it plays the window. :meth:`widget` shows it in Jupyter (ipympl's canvas, with the player
    below it); ``play`` replaces what a click does (it is given the window's row)."""

    def __init__(self, windows: Windows, points: np.ndarray, colours: Sequence | None = None, *,
                 title: str = "click a point to listen, hover to see its file and time", radius_px: float = 8.0,
                 play: Callable[[int], None] | None = None) -> None:
        from matplotlib.figure import Figure

        self.windows, self.points, self.radius_px = windows, np.asarray(points, np.float64), radius_px
        if self.points.shape != (len(windows), 2):
            raise ValueError(f"points: expected [{len(windows)}, 2], found {self.points.shape}")
        self.fig = Figure(figsize=(7, 5))
        self.ax = self.fig.add_subplot()
        groups = np.asarray(colours, dtype=object) if colours is not None else np.full(len(windows), "", object)
        for k, name in enumerate(sorted(set(groups), key=str)):
            chosen = groups == name
            self.ax.scatter(self.points[chosen, 0], self.points[chosen, 1], s=14, label=str(name) or None,
                            color=f"C{k % 10}")
        if colours is not None:
            self.ax.legend(fontsize=7, loc="best")
        self.ax.set_title(title, fontsize=9)
        self.note = self.ax.annotate("", xy=(0, 0), xytext=(8, 8), textcoords="offset points", fontsize=8,
                                     bbox={"boxstyle": "round", "fc": "white", "alpha": 0.9}, visible=False)
        self.output = None
        self.play = play if play is not None else self._play
        self.fig.canvas.mpl_connect("motion_notify_event", self.on_move)
        self.fig.canvas.mpl_connect("button_press_event", self.on_click)

    def nearest(self, x_px: float, y_px: float) -> int | None:
        """The row of the point drawn nearest to the display position ``(x_px, y_px)``, if within ``radius_px``."""
        drawn = self.ax.transData.transform(self.points)
        distance = np.hypot(drawn[:, 0] - x_px, drawn[:, 1] - y_px)
        i = int(distance.argmin())
        return i if distance[i] <= self.radius_px else None

    def on_move(self, event) -> None:
        i = self.nearest(event.x, event.y) if event.inaxes is self.ax else None
        if i is None:
            changed = self.note.get_visible()
            self.note.set_visible(False)
        else:
            changed = True
            self.note.xy = tuple(self.points[i])
            self.note.set_text(self.windows.describe(i))
            self.note.set_visible(True)
        if changed:
            self.fig.canvas.draw_idle()

    def on_click(self, event) -> None:
        i = self.nearest(event.x, event.y) if event.inaxes is self.ax else None
        if i is not None:
            self.play(i)

    def _play(self, i: int) -> None:
        from IPython.display import Audio, display

        if self.output is None:
            return
        with self.output:
            self.output.clear_output(wait=True)
            print(self.windows.describe(i))
            display(Audio(window_audio(self.windows, i), rate=SAMPLE_RATE, autoplay=True))

    def widget(self):
        """The map as a Jupyter widget (ipympl canvas; the player appears below it when a point is clicked)."""
        import matplotlib

        backend = matplotlib.get_backend()
        try:
            import ipywidgets
            from ipympl.backend_nbagg import Canvas, FigureManager
        except ImportError as error:
            raise ImportError("the interactive map needs ipympl (matplotlib's Jupyter widget backend): pip install "
                              "ipympl (the notebooks extra has it); on Colab, also run "
                              "google.colab.output.enable_custom_widget_manager()") from error
        finally:  # importing ipympl makes it pyplot's backend; the notebook's other figures stay as they were
            if matplotlib.get_backend() != backend:
                matplotlib.use(backend)
        canvas = Canvas(self.fig)
        FigureManager(canvas, 0)
        canvas.header_visible = False
        self.output = ipywidgets.Output()
        return ipywidgets.VBox([canvas, self.output])
