"""Ray Data as the engine of the file pipelines: ``avex-hub embed|classify --engine ray [--address ADDR]``, and
:func:`result_dataset` for pipelines of your own.

    from avex_hub.integrations.ray_data import result_dataset
    settings = inference_settings(model, "classify", species=["Strix aluco"])
    dataset = result_dataset(paths, model, settings)        # a ray.data.Dataset; nothing runs until it is read
    windows = dataset.filter(lambda row: not row["end"])    # or .write_parquet(...), .iter_batches(...), ...

The one recording pipeline (:mod:`avex_hub.encoder.pipeline`) split over a cluster, stage by stage:

1. **Decoding and windowing: CPU tasks.** Each task streams its files through
   :func:`avex_hub.audio.batches.file_windows` (the windows one machine cuts; URLs read in ranges with the run's
   storage options) and hands on rows of windows, then one *end row* per file: its window count, and the error
   that stopped it, if any.
2. **The model: an actor pool.** Each actor holds the model (sent once through the object store) as the
   pipeline's :class:`~avex_hub.encoder.pipeline.WindowModel` call, made by
   :func:`avex_hub.encoder.runtimes.window_model` as on one machine (so ``runtime``, ``precision`` and
   ``threads`` mean the same), and runs the windows it gets through :func:`avex_hub.audio.batches.batch_windows`,
   ``batch_size`` windows a call (windows of different lengths never share a call); it keeps of each window what
   one machine keeps (:func:`avex_hub.embed.inference.rows_of`). One GPU per actor where the cluster has GPUs,
   else a CPU pool: one actor per node, holding all but one of its cores (one is left to decoding).
3. **Rows back to the driver**, gathered per file (complete once its end row and all its windows have arrived, in
   whatever order the actors finish) into the :class:`~avex_hub.embed.inference.FileResult` one machine gives
   (:func:`iter_file_results`); the CLI writes each as a part and merges as always, so a rerun skips files already
   written and a file that fails is a row of the failure list, never a failed job.

Ray is started by the user: :func:`connect` uses the cluster this process already joined, else the one at
``address`` (or ``RAY_ADDRESS``), which must be running, else starts a local one on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Iterator, Sequence

import numpy as np

from ..audio.arrays import MIX_CHANNEL, SAMPLE_RATE
from ..audio.quality import FLAG_NAMES

__all__ = ["connect", "result_dataset", "iter_file_results", "RESULT_COLUMNS"]

# The columns of result_dataset's rows: each row is one window (end False) or a file's end (end True); the outputs
# (embeddings, or top_scores and top_indices) follow them.
RESULT_COLUMNS = ("file", "path", "end", "error", "truncated", "windows", "channel", "start_s", "end_s", "index",
                  "flags")
_DECODE_MEMORY = 512 * 2**20  # what a decoding worker may hold (its process with torch, about 280 MiB, a block of
# audio and its windows); a resource the actors do not ask for, which also keeps Ray from fusing the decoding into them


def connect(address: str | None = None):
    """The ``ray`` module, initialised: the cluster this process already joined; else the one at ``address``
    (``host:port`` of its head, ``ray://host:port``, or ``auto``: the cluster of this node; default
    ``RAY_ADDRESS``), which must be running (a one-line ConnectionError saying what to do otherwise, checked even
    when this process has joined a cluster: the package never starts one there); else a local Ray started on this
    machine. ModuleNotFoundError naming the extra when Ray is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401 - ray[data]'s own packages (pyarrow, pandas) are checked with it
    except ImportError as error:
        raise ModuleNotFoundError(f"--engine ray needs Ray Data ({error}): pip install 'avex-hub[ray]'") from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto"):  # auto: this node's cluster, found by Ray itself (it says so when there is none)
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    if address is None:
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        return ray
    try:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError) as error:
        raise ConnectionError(f"--address {address}: {str(error).splitlines()[0]}; start the cluster (`ray start "
                              "--head` or `ray up CLUSTER.yaml`) and give the address it printed") from None
    return ray


def _check_reachable(address: str) -> None:
    """A ConnectionError in one line when nothing answers at ``address`` within 5 s (before Ray's own, long wait)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as error:
        raise ConnectionError(f"--address {address}: no Ray cluster answers there ({error}); start one with `ray "
                              "start --head` (or `ray up CLUSTER.yaml`) and give the address it printed, or leave "
                              "--address out to run on a local Ray") from None


# -- stage 1: decoding tasks ------------------------------------------------------------------------------------
def _decode(batch: dict, *, window_s: float, hop_s: float, channels, block_s: float, size: int, chunk: int,
            options: dict) -> Iterator[dict]:
    """The windows of each file of ``batch`` as rows, ``chunk`` at a time, then the file's end row."""
    from ..audio.batches import FileEnd, file_windows
    from ..storage.locations import using_options

    paths = [str(p) for p in batch["path"]]
    with using_options(options):
        for position, file in enumerate(batch["file"].tolist()):
            waiting, count = [], 0
            for item in file_windows(paths, [position], window_s=window_s, hop_s=hop_s, channels=channels,
                                     block_s=block_s):
                if isinstance(item, FileEnd):
                    if waiting:
                        yield _window_rows(waiting, file, paths[position], size)
                    yield _columns(1, file, paths[position], size, end=True, error=item.error or "",
                                   truncated=item.truncated, windows=count)
                    continue
                waiting.append(item)
                count += 1
                if len(waiting) == chunk:
                    yield _window_rows(waiting, file, paths[position], size)
                    waiting = []


def _columns(n: int, file: int, path: str, size: int, *, end: bool, error: str = "", truncated: bool = False,
             windows: int = 0) -> dict:
    """The columns of ``n`` rows of one file: window fields zero, audio zero and all padding."""
    return {"file": np.full(n, file, np.int64), "path": np.array([path] * n, dtype=object), "end": np.full(n, end),
            "error": np.array([error] * n, dtype=object), "truncated": np.full(n, truncated),
            "windows": np.full(n, windows, np.int64), "channel": np.zeros(n, np.int32), "start_s": np.zeros(n),
            "end_s": np.zeros(n), "index": np.zeros(n, np.int64), "flags": np.zeros((n, len(FLAG_NAMES)), bool),
            "length": np.zeros(n, np.int64), "audio": np.zeros((n, size), np.float32),
            "mask": np.ones((n, size), bool)}


def _window_rows(windows: list, file: int, path: str, size: int) -> dict:
    """Window rows of one file: audio and mask padded to ``size`` samples, ``length`` the window's own."""
    rows = _columns(len(windows), file, path, size, end=False)
    for i, w in enumerate(windows):
        length = w.audio.shape[-1]
        rows["audio"][i, :length], rows["mask"][i, :length], rows["length"][i] = w.audio, w.padding_mask, length
        rows["channel"][i] = MIX_CHANNEL if w.channel is None else w.channel
        rows["start_s"][i], rows["end_s"][i], rows["index"][i] = w.start_s, w.end_s, w.index
        rows["flags"][i] = [getattr(w.flags, name) for name in FLAG_NAMES]
    return rows


# -- stage 2: the model's actors --------------------------------------------------------------------------------
class _ModelActor:
    """Holds the model as the pipeline's WindowModel call; runs the window rows of each batch it gets and passes end
    rows on (see the module docstring)."""

    def __init__(self, model, settings, asked, device: str, batch_size: int, threads: int | None) -> None:
        import ray
        import torch

        from ..encoder.runtimes import window_model
        from ..embed.inference import output_of

        if threads is not None:  # this actor's own process: its runtime's and torch's compute threads
            torch.set_num_threads(threads)
        module = ray.get(model[0])  # sent once through the object store (in a list: Ray passes it as a reference)
        self.settings, self.asked, self.batch_size = settings, asked, batch_size
        self.output = output_of(settings)
        self.run = window_model(module, self.output, runtime=settings.runtime, precision=settings.precision,
                                device=device, threads=threads)
        self.width = module.embedding_dim

    def __call__(self, batch: dict) -> dict:
        import torch

        from ..audio.batches import batch_windows
        from ..audio.quality import QualityFlags
        from ..audio.windows import Window
        from ..embed.inference import rows_of
        from ..encoder.pipeline import run_batches

        n = len(batch["end"])
        windows = [Window(audio=torch.from_numpy(batch["audio"][i, :length].copy()),
                          padding_mask=torch.from_numpy(batch["mask"][i, :length].copy()), path=None,
                          channel=int(batch["channel"][i]), start_s=float(batch["start_s"][i]),
                          end_s=float(batch["end_s"][i]), index=int(batch["index"][i]),
                          flags=QualityFlags(**dict(zip(FLAG_NAMES, map(bool, batch["flags"][i])))),
                          file=i)  # its row in this batch: its outputs go back there
                   for i, length in enumerate(batch["length"].tolist()) if not batch["end"][i]]
        outputs = self._empty(n)
        for done in run_batches(self.run, batch_windows(windows, self.batch_size)):
            for name, value in rows_of(done.outputs, self.settings, self.asked).items():
                outputs[name][done.batch.file.numpy()] = value
        return {**{k: v for k, v in batch.items() if k not in ("audio", "mask", "length")}, **outputs}

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        """The output columns of ``n`` rows, zero (end rows keep them so; every batch has the same columns)."""
        if self.settings.task == "embed":
            return {"embeddings": np.zeros((n, len(self.settings.layers), self.width), np.float32)}
        k = self.settings.top_k if self.asked is None else len(self.asked)
        return {"top_scores": np.zeros((n, k), np.float32), "top_indices": np.zeros((n, k), np.int32)}


def _pool(ray, device: str, runtime: str, actors: int | None) -> tuple[int, float, float, int | None]:
    """``(actors, GPUs and CPUs per actor, compute threads)``: one actor per GPU where the cluster has GPUs (and
    ``device`` and ``runtime`` can use them), with torch's own threads; otherwise one per node, holding all but one
    of a node's cores (one is left to decoding) and computing on all of them, as one machine runs its model beside
    its decoding."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" and runtime == "torch" else 0
    if device.startswith("cuda") and not gpus:
        why = "the Ray cluster has no GPU" if runtime == "torch" else f"runtime {runtime!r} runs on CPUs"
        raise ValueError(f"device {device!r}: {why}; use device 'cpu' or 'auto'")
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    cores = min(int(n["Resources"]["CPU"]) for n in nodes) if nodes else int(resources.get("CPU", 1))
    if gpus:
        return actors or gpus, 1.0, 1.0, None
    return actors or max(1, len(nodes)), 0.0, float(max(1, cores - 1)), cores


def result_dataset(paths: Sequence[str], model, settings, *, batch_size: int | None = None,
                   actors: int | None = None, device: str = "auto", threads: int | None = None,
                   block_s: float = 60.0, address: str | None = None):
    """A ``ray.data.Dataset`` of the windows of ``paths`` through ``model`` under ``settings`` (from
    :func:`avex_hub.embed.inference.inference_settings`: the runtime and precision too), for pipelines of your own.

    Rows: ``file`` (position in ``paths``), ``path``, ``end``; window rows (``end`` False) carry ``channel`` (-1 the
    mix), ``start_s``, ``end_s``, ``index``, ``flags`` (clipped, silent, too_short, truncated) and what one machine
    keeps of the outputs (``embeddings`` ``[layers, C]``, or ``top_scores`` and ``top_indices`` ``[k]``); a file's
    end row carries ``windows`` (its window count), ``error`` (empty, or why it failed: drop its window rows) and
    ``truncated`` (it decoded less than its header states: flag its rows). Nothing runs until the dataset is read.
    ``batch_size``: windows per model call (default as on one machine: 2 on CPUs, 64 on a GPU); ``actors``: model
    actors (default one per GPU, else one per node); ``device``: ``"auto"`` (GPUs where the cluster has them),
    ``"cpu"`` or ``"cuda"``; ``threads``: each CPU actor's compute threads (default: its node's cores). The
    storage options in force (:func:`avex_hub.storage.locations.using_options`) reach the decoding tasks; a
    ``runtime`` other than torch is exported (or found in the cache) here first, so a failed export stops before any
    audio is read.
    """
    import torch

    from ..audio.windows import window_params
    from ..embed.inference import asked_labels, output_of
    from ..encoder.precision import batch_size_for
    from ..encoder.runtimes import window_model
    from ..storage.locations import current_options

    ray = connect(address)
    count, gpus, cpus, pool_threads = _pool(ray, str(device), settings.runtime, actors)
    if settings.runtime != "torch":  # the driver's check and export; the actors of this node find it cached
        window_model(model, output_of(settings), runtime=settings.runtime, precision=settings.precision,
                     device="cpu", threads=1)
    size, _ = window_params(settings.window_s, settings.hop_s, SAMPLE_RATE)  # the longest window a row holds
    batch_size = batch_size_for(torch.device("cuda" if gpus else "cpu"), batch_size)
    files = ray.data.from_items([{"file": i, "path": str(p)} for i, p in enumerate(paths)],
                                override_num_blocks=max(1, min(len(paths), 1000)))
    windows = files.map_batches(_decode, batch_size=1, num_cpus=1, memory=_DECODE_MEMORY, fn_kwargs=dict(
        window_s=settings.window_s, hop_s=settings.hop_s, channels=settings.channels, block_s=block_s, size=size,
        chunk=batch_size, options=current_options()))
    return windows.map_batches(
        _ModelActor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=count), num_gpus=gpus or None,
        num_cpus=cpus,
        fn_constructor_kwargs=dict(model=[ray.put(model)], settings=settings, asked=asked_labels(model, settings),
                                   device="cuda" if gpus else "cpu", batch_size=batch_size,
                                   threads=threads or pool_threads))


# -- stage 3: rows per file, on the driver ----------------------------------------------------------------------
def iter_file_results(model, paths: Sequence[str], settings, *, batch_size: int | None = None,
                      actors: int | None = None, device: str = "auto", threads: int | None = None,
                      block_s: float = 60.0, address: str | None = None, progress: bool = True):
    """What :func:`avex_hub.embed.inference.iter_file_results` yields, computed on Ray (:func:`result_dataset`'s
    arguments): each file's :class:`~avex_hub.embed.inference.FileResult` as it completes, a failed file with
    ``error`` set."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    dataset = result_dataset(paths, model, settings, batch_size=batch_size, actors=actors, device=device,
                             threads=threads, block_s=block_s, address=address)
    dataset.context.enable_progress_bars = progress  # this dataset's own copy of Ray Data's settings
    with _quiet(not progress):
        yield from _gathered(dataset, paths, settings)


@contextlib.contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """Ray Data's own lines (its execution plan, the bars it leaves out) kept to errors for the block: a run
    without progress says only what it did."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _gathered(dataset, paths: list[str], settings) -> Iterator:
    """The dataset's rows gathered per file into FileResults (see :func:`iter_file_results`)."""
    from ..audio.batches import FileEnd
    from ..embed.inference import file_result

    gathered: dict[int, list[dict]] = {}
    ends: dict[int, tuple[str, bool, int]] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for file in np.unique(batch["file"]).tolist():
            rows = batch["file"] == file
            ending = np.flatnonzero(rows & batch["end"])
            if len(ending):
                ends[file] = (str(batch["error"][ending[0]]), bool(batch["truncated"][ending[0]]),
                              int(batch["windows"][ending[0]]))
            windows = rows & ~batch["end"]
            if windows.any():
                gathered.setdefault(file, []).append({k: v[windows] for k, v in batch.items()})
            if file in ends and sum(len(c["index"]) for c in gathered.get(file, [])) >= ends[file][2]:
                error, truncated, _ = ends.pop(file)
                chunks = gathered.pop(file, [])
                yield file_result(paths[file], FileEnd(file, error or None, truncated), _ordered(chunks),
                                  max((float(c["end_s"].max()) for c in chunks), default=0.0), settings)


def _ordered(chunks: list[dict]) -> dict[str, np.ndarray]:
    """One file's window rows in the order one machine gives them (time, then channel)."""
    if not chunks:
        return {}
    keys = ("channel", "start_s", "end_s", "index", "flags", "embeddings", "top_scores", "top_indices")
    rows = {k: np.concatenate([c[k] for c in chunks]) for k in keys if k in chunks[0]}
    order = np.lexsort((rows["channel"], rows["index"]))
    return {k: v[order] for k, v in rows.items()}
