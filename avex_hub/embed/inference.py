"""Embedding and classification of whole recordings and folders: windows streamed, batched, bounded in memory.

    from avex_hub.embed.inference import embed_files, classify_files
    result = embed_files(model, ["site1/", "night.flac"], window_s=10, layers=-1, num_workers=2)
    result.embeddings            # float32 [rows, C]; result.file / .channel / .start_s / .end_s per row
    result.to_parquet("emb.parquet"); result.failures   # {path: error} of unreadable inputs
    result.to_parquet("emb.parquet", clock=WindowClock(...))   # with absolute times: avex_hub.monitoring.recordings

How it runs: the one recording pipeline. A DataLoader over an ``IterableDataset`` whose workers each take a
share of the files (largest first, to the least loaded worker), decode and resample them block by block
(:func:`avex_hub.audio.batches.file_windows`) and hand over ready window batches
(:func:`avex_hub.audio.batches.batch_windows`) with a ``FileEnd`` after each file; the main process runs them
through the model (:func:`avex_hub.encoder.pipeline.run_batches`). Per-file results are assembled in the main
process and yielded as each file completes (:func:`iter_file_results`); ``embed_files``/``classify_files`` return
them in input order. The CLI (``avex-hub embed|classify``) is built on :func:`iter_file_results`, so there is one
implementation.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from ..audio.batches import FileEnd, WindowBatch, batch_windows, file_windows
from ..audio.folders import AUDIO_EXTENSIONS, find_audio
from ..audio.quality import FLAG_NAMES
from ..encoder.model import check_pooling
from ..encoder.pipeline import BatchOutputs, Embeddings, Rows, Scores, run_batches
from ..encoder.runtimes import check_runtime, default_threads, torch_threads, window_model
from ..encoder.precision import batch_size_for, default_num_workers, device_for
from ..labels import match_species
from ..storage.locations import current_options, using_options
from .settings import OUTPUT_VERSION, ClassifySettings, EmbedSettings, InferenceSettings

FLAG_TRUNCATED = FLAG_NAMES.index("truncated")  # its column in ``flags``

__all__ = [
    "AUDIO_EXTENSIONS", "FileResult", "InferenceResult", "find_audio_files", "inference_settings",
    "iter_file_results", "output_of", "rows_of", "asked_labels", "file_result", "embed_files", "classify_files",
]


def find_audio_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files named directly (any extension) plus audio files found under folders (:func:`avex_hub.audio.folders.find_audio`:
    recursive, sorted, links followed, hidden entries skipped, each file once).

    Raises FileNotFoundError for a path that does not exist and PermissionError naming every folder that could
    not be listed (``avex_hub.audio.folders.find_audio`` returns the readable files and those folders instead).
    """
    search = find_audio(paths)
    if search.failures:
        raise PermissionError(f"{len(search.failures)} folder(s) could not be listed: "
                              + "; ".join(f"{k} ({v})" for k, v in search.failures.items()))
    return search.files


def inference_settings(model, task: str, *, window_s: float | None = None, hop_s: float | None = None,
                       channels="mix", layers=-1, pooling: str = "mean", precision: str = "fp32",
                       top_k: int = 5, species=None, runtime: str = "torch") -> InferenceSettings:
    """Everything that changes the numbers in an output (not device or batch size), checked; stored with it.

    Weights digest, the full architecture config, preprocessing, precision and runtime (a pair of
    :data:`avex_hub.encoder.runtimes.RUNTIMES`; its package must be installed), channels, window, hop, layers and
    pooling (:class:`~avex_hub.embed.settings.EmbedSettings`) or top-k and the label names' digest
    (:class:`~avex_hub.embed.settings.ClassifySettings`), and the output format version; the CLI reuses a stored
    shard only when all of them agree. ``window_s=None``: the model's ``preprocessing.window_s``. ``layers``
    (embed): an index (-1 = last, 0 = encoder input), a list of them, or ``"all"``. ``species`` (classify): label
    names whose scores every window keeps instead of its top k (a name not in the label map is a ValueError with
    the closest labels, :func:`avex_hub.labels.match_species`).
    """
    import hashlib
    import json

    from .._version import __version__
    from ..audio.windows import window_params

    if task not in ("embed", "classify"):
        raise ValueError(f"task must be 'embed' or 'classify', got {task!r}")
    check_runtime(runtime, precision)
    if window_s is None:
        window_s = model.preprocessing.window_s  # the clip length the model was trained on
    window_params(window_s, hop_s, model.sample_rate)  # bad window or hop: a usage error now, not per file
    if not (channels in ("mix", "all") or (isinstance(channels, int) and not isinstance(channels, bool))):
        raise ValueError(f"channels must be 'mix', 'all' or a channel index, got {channels!r}")
    common = dict(model=model.name, weights_sha256=model.weights_sha256, window_s=float(window_s),
                  hop_s=float(window_s if hop_s is None else hop_s), channels=channels, precision=precision,
                  runtime=runtime,
                  sample_rate=model.sample_rate, architecture=model.config.to_dict(),
                  preprocessing=model.preprocessing.to_dict(), output_version=OUTPUT_VERSION,
                  avex_hub_version=__version__)
    if task == "embed":
        check_pooling(pooling)
        return EmbedSettings(**common, layers=tuple(model.layer_indices(layers)), pooling=pooling)
    if model.label_map is None or getattr(model, "classifier", None) is None:
        raise ValueError(f"{model.name} has no species head to classify with; use embed (or a probe)")
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    names = json.dumps(list(model.labels), ensure_ascii=False).encode("utf-8", "surrogatepass")
    asked = () if species is None else tuple(match_species(list(species), list(model.labels), where="species"))
    return ClassifySettings(**common, top_k=min(top_k, len(model.labels)), labels=len(model.labels),
                            labels_sha256=hashlib.sha256(names).hexdigest(), species=asked)


@dataclass
class FileResult:
    """The rows of one input file (``error`` set and no rows when it could not be processed).

    ``arrays``: ``channel`` int32 [n] (-1 = mono mix), ``start_s``/``end_s`` float64 [n], ``flags`` bool
    [n, 4] (clipped, silent, too_short, truncated: set on every row of a file that decodes fewer frames than
    its header states; ``truncated`` says the same of the file); for embed ``layer`` int16 [n] and
    ``embeddings`` float32 [n, C] (rows are window-major, then layer); for classify ``top_indices`` int32
    [n, k] and ``top_scores``
    float32 [n, k] (sigmoid scores, best first; with ``species`` asked, those labels' scores in the order asked).
    """

    path: str
    error: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    num_windows: int = 0
    duration_s: float = 0.0  # audio covered (end of the last window's real audio)
    truncated: bool = False


# -- the worker side: files -> batches of windows -------------------------------------------------------
def _assign(sizes: Sequence[int], workers: int) -> list[list[int]]:
    """Greedy longest-first assignment of file indices to workers (balanced by bytes, deterministic)."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        w = load.index(min(load))
        shares[w].append(i)
        load[w] += sizes[i]
    return [sorted(s) for s in shares]


class _WindowBatches(torch.utils.data.IterableDataset):
    """The batches of :func:`avex_hub.audio.batches.batch_windows` over the windows of this worker's share of
    ``paths`` (all of them without workers), with a ``FileEnd`` after each file's last batch."""

    def __init__(self, paths: list[str], settings: InferenceSettings, batch_size: int, block_s: float) -> None:
        super().__init__()
        self.paths, self.settings, self.batch_size, self.block_s = paths, settings, batch_size, block_s
        self.sizes = [os.path.getsize(p) if os.path.isfile(p) else 0 for p in paths]
        self.storage_options = current_options()  # URLs are read with them in the workers too

    def __iter__(self) -> Iterator[WindowBatch | FileEnd]:
        info = torch.utils.data.get_worker_info()
        mine = _assign(self.sizes, info.num_workers)[info.id] if info is not None else range(len(self.paths))
        with using_options(self.storage_options):
            windows = file_windows(self.paths, mine, window_s=self.settings.window_s, hop_s=self.settings.hop_s,
                                   channels=self.settings.channels, block_s=self.block_s)
            yield from batch_windows(windows, self.batch_size)


# -- the main-process side: batches -> model -> per-file rows ---------------------------------------
def rows_of(outputs: dict[str, np.ndarray], settings: InferenceSettings,
            asked: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a file's rows keep of the model's outputs: the embeddings ``[b, L, C]``, the top-k scores, or the
    scores of the ``asked`` label indices (every one in every window)."""
    if isinstance(settings, EmbedSettings):
        return outputs
    if asked is not None:
        scores = outputs["scores"][:, asked]
        return {"top_scores": scores, "top_indices": np.broadcast_to(asked, scores.shape).copy()}
    values, indices = torch.from_numpy(outputs["scores"]).topk(settings.top_k, dim=1)
    return {"top_scores": values.numpy(), "top_indices": indices.to(torch.int32).numpy()}


def output_of(settings: InferenceSettings) -> Embeddings | Scores:
    """What the model is asked for under ``settings``: the embeddings of its layers, or the species scores."""
    return Embeddings(settings.layers, settings.pooling) if isinstance(settings, EmbedSettings) else Scores()


def asked_labels(model, settings: InferenceSettings) -> np.ndarray | None:
    """The label indices of classify's ``species`` (int32, in the order asked), or None (embed, or top k)."""
    if isinstance(settings, EmbedSettings) or not settings.species:
        return None
    return np.array([model.labels.index(name) for name in settings.species], dtype=np.int32)


def _file_arrays(rows: dict[str, np.ndarray], settings: InferenceSettings) -> dict[str, np.ndarray]:
    a = {k: v for k, v in rows.items() if k != "index"}
    if a and isinstance(settings, EmbedSettings):  # one row per (window, layer), window-major
        layers = np.asarray(settings.layers, dtype=np.int16)
        n, L, C = a["embeddings"].shape
        for k in ("channel", "start_s", "end_s", "flags"):
            a[k] = np.repeat(a[k], L, axis=0)
        a["layer"] = np.tile(layers, n)
        a["embeddings"] = a["embeddings"].reshape(n * L, C)
    return a


def _durations(paths: list[str]) -> list[float]:
    from ..audio.decoding import audio_info

    out = []
    for p in paths:
        try:
            out.append(audio_info(p).duration_s)
        except Exception:  # noqa: BLE001 - unreadable files are reported when processed
            out.append(0.0)
    return out


def iter_file_results(model, paths: Sequence[str], settings: InferenceSettings, *, batch_size: int | None = None,
                      num_workers: int | None = None, device=None, block_s: float = 60.0,
                      progress: bool = True, threads: int | None = None) -> Iterator[FileResult]:
    """Process ``paths`` with ``settings`` (from :func:`inference_settings`); yield each file's result as it completes.

    Completion order is deterministic for a given ``num_workers``. Failed files are yielded with
    ``error`` set. ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no
    device (``"auto"``: CUDA when available). Memory: a few batches of windows plus the current files' output rows.
    ``threads``: the runtime's compute threads on the CPU (torch's are set for the run and restored after); default
    :func:`~avex_hub.encoder.runtimes.default_threads` (the cores less the decoding workers).
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    if not paths:
        return
    device = device_for(model, device)
    output = output_of(settings)
    batch_size = batch_size_for(device, batch_size)
    workers = min(default_num_workers(device) if num_workers is None else num_workers, len(paths))
    if threads is None and device.type == "cpu":  # the decoding workers keep their cores
        threads = default_threads(workers)
    run = window_model(model, output, runtime=settings.runtime, precision=settings.precision, device=device,
                       threads=threads)
    loader = torch.utils.data.DataLoader(_WindowBatches(paths, settings, batch_size, block_s), batch_size=None,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         prefetch_factor=2 if workers else None)
    bar = tqdm(total=round(sum(_durations(paths)), 1) if progress else 0, unit="s audio", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    rows, covered, asked = Rows(), {}, asked_labels(model, settings)
    windows = done = 0
    started = time.perf_counter()
    iterator = iter(loader)
    restore = contextlib.ExitStack()
    # torch's threads too on another runtime: the decoding, resampling and filterbank it computes between the
    # runtime's calls stay within the cores given, and --threads 1 means one compute thread in all
    restore.enter_context(torch_threads(threads))
    try:
        for item in run_batches(run, iterator):
            if isinstance(item, FileEnd):
                done += 1
                yield file_result(paths[item.file], item, rows.take(item.file), covered.pop(item.file, 0.0),
                                  settings)
            else:
                rows.add(BatchOutputs(item.batch, rows_of(item.outputs, settings, asked)))
                for index, end in zip(item.batch.file.tolist(), item.batch.end_s.tolist()):
                    bar.update(max(0.0, end - covered.get(index, 0.0)))
                    covered[index] = max(end, covered.get(index, 0.0))
                windows += len(item.batch)
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"files {done}/{len(paths)}, windows {windows}, {bar.n / elapsed:.1f}x real time",
                                refresh=False)
    finally:
        del iterator  # shuts the workers down, also when the caller stops early
        bar.close()
        restore.close()  # torch's threads as they were


def file_result(path: str, end: FileEnd, rows: dict[str, np.ndarray], covered: float,
                settings: InferenceSettings) -> FileResult:
    """One file's :class:`FileResult` from its end and its window rows (:class:`~avex_hub.encoder.pipeline.Rows`,
    outputs kept by :func:`rows_of`); ``covered``: the end of its last window's real audio."""
    if end.error is not None:
        return FileResult(path, error=end.error)
    arrays = _file_arrays(rows, settings)
    if end.truncated and arrays:  # known at the file's end: every row of it carries the flag
        arrays["flags"][:, FLAG_TRUNCATED] = True
    return FileResult(path, arrays=arrays, num_windows=len(rows.get("start_s", ())), duration_s=covered,
                      truncated=end.truncated)


# -- the one-call API ---------------------------------------------------------------------------------
@dataclass
class InferenceResult:
    """Rows of all successful inputs in input order, the failures, and the settings that made them."""

    task: str
    settings: InferenceSettings
    labels: tuple[str, ...]
    files: list[FileResult]
    failures: dict[str, str]

    def _cat(self, key: str, empty: np.ndarray) -> np.ndarray:
        parts = [f.arrays[key] for f in self.files if f.arrays]
        return np.concatenate(parts) if parts else empty

    def __len__(self) -> int:
        return sum(len(f.arrays.get("start_s", ())) for f in self.files)

    @property
    def file(self) -> np.ndarray:
        return np.array([f.path for f in self.files for _ in range(len(f.arrays.get("start_s", ())))], dtype=str)

    channel = property(lambda self: self._cat("channel", np.zeros(0, np.int32)))
    start_s = property(lambda self: self._cat("start_s", np.zeros(0)))
    end_s = property(lambda self: self._cat("end_s", np.zeros(0)))
    flags = property(lambda self: self._cat("flags", np.zeros((0, 4), bool)))
    layer = property(lambda self: self._cat("layer", np.zeros(0, np.int16)))
    embeddings = property(lambda self: self._cat("embeddings", np.zeros((0, 0), np.float32)))
    top_indices = property(lambda self: self._cat("top_indices", np.zeros((0, 0), np.int32)))
    top_scores = property(lambda self: self._cat("top_scores", np.zeros((0, 0), np.float32)))

    @property
    def top_labels(self) -> list[list[str]]:
        return [[self.labels[i] for i in row] for row in self.top_indices]

    def _parts(self):
        return [(f.path, f.arrays) for f in self.files if f.arrays]

    # clock: times and places of the windows (an avex_hub.monitoring.recordings.WindowClock; the --times columns)
    def to_parquet(self, path, clock=None) -> int:
        from .outputs import write_parquet

        return write_parquet(path, self._parts(), self.settings, self.embeddings.shape[1], clock)

    def to_npz(self, path, clock=None) -> int:
        from .outputs import write_npz

        return write_npz(path, self._parts(), self.settings, self.embeddings.shape[1], clock)

    def to_csv(self, path, calibration=None, clock=None) -> int:
        """``calibration``: a thresholds file's :class:`avex_hub.monitoring.calibration.Thresholds` (``Thresholds.load``)
        for ``probability`` and ``detected`` columns; needs ``species`` asked, refused for another model."""
        from .outputs import write_csv

        return write_csv(path, self._parts(), self.labels, settings=self.settings, calibration=calibration,
                         clock=clock)

    def to_raven(self, folder, min_score: float = 0.0, clock=None) -> list[Path]:
        from .outputs import raven_names, write_raven_tables

        return write_raven_tables(folder, self._parts(), self.labels, raven_names([f.path for f in self.files]),
                                  min_score, clock)


def _run(model, task: str, paths, *, window_s, hop_s, channels, layers, pooling, top_k, batch_size, num_workers,
         precision, device, progress, runtime, threads, species=None) -> InferenceResult:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    search = find_audio(paths)
    files = search.files
    settings = inference_settings(model, task, window_s=window_s, hop_s=hop_s, channels=channels, layers=layers,
                                  pooling=pooling, precision=precision, top_k=top_k, runtime=runtime,
                                  species=species)
    results = {r.path: r for r in iter_file_results(model, files, settings, batch_size=batch_size,
                                                   num_workers=num_workers, device=device, progress=progress,
                                                   threads=threads)}
    ok = [results[p] for p in files if results[p].error is None]
    failures = {**search.failures, **{p: results[p].error for p in files if results[p].error is not None}}
    return InferenceResult(task, settings, tuple(model.labels), ok, failures)


def embed_files(model, paths, *, window_s: float | None = None, hop_s: float | None = None, layers=-1,
                pooling: str = "mean", channels="mix", batch_size: int | None = None,
                num_workers: int | None = None, precision: str = "fp32", device=None,
                progress: bool = True, runtime: str = "torch", threads: int | None = None) -> InferenceResult:
    """Pooled embeddings of every window of every file (folders are searched for audio files).

    ``layers``: an index (-1 = last, 0 = encoder input), a list of them, or ``"all"``; ``channels``: ``"mix"``,
    ``"all"`` or a channel index.
    ``window_s=None``: the model's ``preprocessing.window_s`` (10 s). Unreadable files end up in
    ``result.failures``. ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on
    no device (``"auto"``: CUDA when available). ``runtime``: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``
    with a ``precision`` it runs (:data:`avex_hub.encoder.runtimes.RUNTIMES`); ``threads``: its compute threads
    (see :func:`iter_file_results`).
    """
    return _run(model, "embed", paths, window_s=window_s, hop_s=hop_s, channels=channels, layers=layers,
                pooling=pooling, top_k=1, batch_size=batch_size, num_workers=num_workers, precision=precision,
                device=device, progress=progress, runtime=runtime, threads=threads)


def classify_files(model, paths, *, top_k: int = 5, window_s: float | None = None, hop_s: float | None = None,
                   channels="mix", batch_size: int | None = None, num_workers: int | None = None,
                   precision: str = "fp32", device=None, progress: bool = True, runtime: str = "torch",
                   threads: int | None = None, species=None) -> InferenceResult:
    """Top-k species (sigmoid scores) of every window of every file; see :func:`embed_files` (``runtime`` and
    ``threads`` too). ``species`` (label names): every window keeps each of these labels' score instead of its
    top k (``to_csv`` then writes no rank).

    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device
    (``"auto"``: CUDA when available).
    """
    return _run(model, "classify", paths, window_s=window_s, hop_s=hop_s, channels=channels, layers=-1,
                pooling="mean", top_k=top_k, batch_size=batch_size, num_workers=num_workers,
                precision=precision, device=device, progress=progress, runtime=runtime, threads=threads,
                species=species)
