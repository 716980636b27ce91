"""Distributed prediction over large archives with ``Trainer.predict``: one shard per rank, merged, each window once.

    from avex_hub.integrations.lightning import window_dataset, extract_embeddings_distributed
    windows = window_dataset(["archive/"], window_s=10.0)              # one item per 10 s window of every file
    merged = extract_embeddings_distributed(model, windows, "emb/", accelerator="gpu", devices=8,
                                            strategy="ddp", num_nodes=2)
    merged.tensors["embedding"][k] belongs to windows.items[merged.tensors["index"][k]] (path, start_s)

Lightning shards the predict loader across ranks (no repeats). :class:`ShardedPredictionWriter` buffers each rank's
outputs and writes them as ``rank<R>-part<K>.safetensors`` every ``flush_every`` rows (bounded memory), then an
index ``rank<R>.json`` (parts, row count, dataset length, world size, run id) when the rank finishes.
:func:`merge_shards` checks that every rank of one run finished, drops repeated dataset indices (a padding
sampler repeats some) and refuses a result that misses any index. Files are written atomically.

An input that cannot be read does not stop the run: :func:`window_dataset` leaves out files whose header cannot be
read, and :func:`extract_embeddings_distributed` records items that fail to decode on any rank; both end in
``MergedPredictions.failures`` (path -> error) and ``failures.csv`` beside the merged file, as the CLI reports them.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ..audio.arrays import MIX_CHANNEL, SAMPLE_RATE, WINDOW_S
from ..audio.batches import batch_windows
from ..audio.datasets import AudioDataset
from ..audio.quality import FLAG_NAMES, QualityFlags
from ..audio.windows import Window
from ..embed.outputs import atomic_path
from ..encoder.model import AvexModel
from ..encoder.pipeline import Embeddings, TorchWindowModel, torch_model

__all__ = ["AvexLightningEmbedder", "ShardedPredictionWriter", "MergedPredictions", "merge_shards",
           "extract_embeddings_distributed", "window_dataset", "WindowDataset", "SHARD_FORMAT"]

SHARD_FORMAT = "avex-hub-shards/1"


def window_dataset(paths, *, window_s: float = WINDOW_S, hop_s: float | None = None, channels="mix", **kwargs):
    """An :class:`avex_hub.audio.datasets.AudioDataset` with one item per ``window_s`` window (every ``hop_s``) of each file
    (files and folders, searched recursively).

    Windows are those of :func:`avex_hub.audio.windows.stream_windows` (both follow
    :func:`avex_hub.audio.windows.window_starts`): window k starts at ``k * hop_s`` and windows continue until one
    reaches the end of the file; the last is zero padded with its ``padding_mask``, and a file no longer than one
    window is one item of its own length (:func:`avex_hub.audio.windows.window_length`). Items carry ``path``,
    ``start_s`` and ``index`` (the item's position), ``file`` (the file's position among those listed), ``window``
    (k) and ``length`` (the samples the item holds), so predictions map back to files.
    """
    from ..audio.arrays import resampled_length
    from ..audio.decoding import AudioDecodeError, audio_info
    from ..audio.windows import window_length, window_params, window_starts
    from ..audio.datasets import AudioItem
    from ..embed.inference import find_audio_files

    window, hop = window_params(window_s, hop_s, SAMPLE_RATE)
    items, failures, files = [], [], 0
    for path in find_audio_files([paths] if isinstance(paths, (str, os.PathLike)) else paths):
        try:
            info = audio_info(path)
        except (OSError, AudioDecodeError) as error:  # left out and reported, as the CLI does
            failures.append((str(path), _describe(error)))
            continue
        total = resampled_length(info.frames, info.sample_rate)  # samples at 16 kHz, as the decoder will make them
        items += [AudioItem(Path(path), (), start / SAMPLE_RATE, min(total, start + window) / SAMPLE_RATE,
                            extra={"file": files, "window": k, "length": window_length(total, window)},
                            origin=f"{path} window {k}")
                  for k, start in enumerate(window_starts(total, window, hop))]
        files += 1
    if not items:
        unreadable = f"; {len(failures)} unreadable files, e.g. {failures[0][0]}: {failures[0][1]}" if failures else ""
        raise ValueError(f"no audio windows in {paths}{unreadable}")
    dataset = WindowDataset(items, clip_s=window / SAMPLE_RATE, channels=channels, source=f"windows of {paths}",
                            **kwargs)
    if failures:
        dataset.failures += failures
        warnings.warn(f"left out {len(failures)} files of {paths} that cannot be read (see dataset.failures)",
                      stacklevel=2)
    return dataset


class WindowDataset(AudioDataset):
    """The windows of :func:`window_dataset`: an :class:`~avex_hub.audio.datasets.AudioDataset` whose items hold
    ``length`` samples (the window, or a short file's own length), as the recording pipeline cuts them."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        length = item["length"]
        item["audio"], item["padding_mask"] = item["audio"][:length], item["padding_mask"][:length]
        return item


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _SkipUnreadable(torch.utils.data.Dataset):
    """A dataset whose items that cannot be decoded become ``{"failed": (index, path, error)}`` instead of an
    exception that would stop every rank; :func:`_collate_skipping` sets them apart."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from ..audio.decoding import AudioDecodeError

        try:
            return self.dataset[index]
        except (OSError, AudioDecodeError) as error:  # OSError: e.g. a file removed since the dataset was made
            items = getattr(self.dataset, "items", None)
            path = str(items[index].path) if items is not None else f"item {index}"
            return {"failed": (int(index), path, _describe(error))}


def _collate_skipping(batch: list[dict]) -> dict:
    """The readable items as ``windows``, window batches of :func:`avex_hub.audio.batches.batch_windows` (one
    length each, in item order), with ``index`` [n] (their dataset positions) and ``failures``:
    [(index, path, error)] of the items that could not be read."""
    good = [item for item in batch if "failed" not in item]
    out: dict = {"failures": [item["failed"] for item in batch if "failed" in item]}
    if good:
        out["windows"] = list(batch_windows([_window(item) for item in good], batch_size=len(good)))
        out["index"] = torch.tensor([int(item["index"]) for item in good], dtype=torch.long)
    return out


def _window(item: dict) -> Window:
    """A dataset item (``avex_hub.audio.datasets.AudioDataset``'s keys) as the pipeline's window; an item of no
    recording list counts as window 0 of file ``index``."""
    mask = torch.as_tensor(item["padding_mask"])
    flags = dict(zip(FLAG_NAMES, torch.as_tensor(item["flags"]).tolist()))
    channel = int(item["channel"])
    return Window(audio=torch.as_tensor(item["audio"]), padding_mask=mask, path=item.get("path"),
                  channel=None if channel == MIX_CHANNEL else channel, start_s=float(item["start_s"]),
                  end_s=float(item["start_s"]) + int((~mask).sum()) / SAMPLE_RATE, flags=QualityFlags(**flags),
                  index=int(item.get("window", 0)), file=int(item.get("file", item["index"])))


class AvexLightningEmbedder(L.LightningModule):
    """A frozen AvexModel for ``Trainer.predict``: each batch gives ``index`` [B] and ``embedding`` float32
    ``[B, C]`` (one layer) or ``[B, L, C]`` (several), pooled over non-padded frames."""

    def __init__(self, model: AvexModel, *, layers: str | int | list[int] = "last", pooling: str = "mean") -> None:
        super().__init__()
        if not isinstance(model, AvexModel):
            raise TypeError(f"model must be an avex_hub.AvexModel, got {type(model).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.output = Embeddings(tuple(model.layer_indices(layers)), pooling)
        self.single = layers == "last" or isinstance(layers, int)
        self._run = torch_model(self.model, self.output)  # checks pooling now

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def _runner(self) -> TorchWindowModel:
        """The pipeline's model call, following the module to the device Lightning put it on."""
        if self._run.device != self.device:
            self._run = torch_model(self.model, self.output, device=self.device)
        return self._run

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Window batches (``windows``, from the prediction loader's collate) or a collated batch (``audio``,
        ``padding_mask``) through the pipeline's model call; ``failures`` of the batch (items that could not be
        read) are passed on for the writer to record."""
        run = self._runner()
        if "windows" in batch:
            parts = [run(windows)["embeddings"] for windows in batch["windows"]]
        elif "audio" in batch:
            parts = [run.run(batch["audio"], batch.get("padding_mask"))["embeddings"]]
        else:  # every item of the batch failed
            parts, batch = [], {**batch, "index": torch.zeros(0, dtype=torch.long)}
        pooled = torch.from_numpy(np.concatenate(parts)) if parts else \
            torch.zeros(0, len(self.output.layers), self.model.embedding_dim)  # [B, L, C]
        result = {"embedding": pooled[:, 0] if self.single else pooled}
        if batch.get("index") is not None:
            result["index"] = torch.as_tensor(batch["index"])
        if batch.get("failures"):
            result["failures"] = list(batch["failures"])
        return result


class ShardedPredictionWriter(BasePredictionWriter):
    """Writes each rank's ``predict_step`` outputs (dicts of tensors with a first axis per item, plus ``index``:
    dataset positions, else Lightning's batch indices) to ``folder``; merge them with :func:`merge_shards`.

    A folder holding shards of an earlier run is refused unless ``overwrite`` (rank 0 then removes them). A
    prediction's ``failures`` (``[(index, path, error)]``, items that could not be read) go to the rank's index.
    """

    def __init__(self, folder: str | os.PathLike, *, flush_every: int = 4096, overwrite: bool = False) -> None:
        super().__init__("batch")
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1 rows, got {flush_every}")
        self.folder, self.flush_every, self.overwrite = Path(folder), int(flush_every), bool(overwrite)
        self._buffer: list[dict[str, torch.Tensor]] = []
        self._parts: list[str] = []
        self._failures: list[list] = []
        self._rows = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        problem, run_id = None, secrets.token_hex(8)
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            old = sorted(p for p in self.folder.glob("rank*") if p.suffix in (".safetensors", ".json"))
            if old and not self.overwrite:
                problem = (f"{self.folder} holds shards of an earlier run ({len(old)} files, e.g. {old[0].name}); "
                           "merge or move them, or pass overwrite=True")
            for path in old if self.overwrite else []:
                path.unlink()
        problem, run_id = trainer.strategy.broadcast((problem, run_id), src=0)
        if problem:
            raise FileExistsError(problem)
        loaders = trainer.predict_dataloaders
        if isinstance(loaders, (list, tuple)):
            if len(loaders) != 1:
                raise ValueError(f"ShardedPredictionWriter handles one predict dataloader, got {len(loaders)}")
            loaders = loaders[0]
        dataset = getattr(loaders, "dataset", None)
        self._length = len(dataset) if hasattr(dataset, "__len__") else None
        self._run_id, self._rank, self._world = run_id, trainer.global_rank, trainer.world_size
        self._buffer, self._parts, self._failures, self._rows = [], [], [], 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        if not isinstance(prediction, dict):
            raise TypeError(f"predict_step must return a dict of tensors to be sharded, got "
                            f"{type(prediction).__name__}")
        self._failures += [[int(i), str(path), str(error)] for i, path, error in prediction.get("failures") or []]
        index = prediction.get("index")
        if index is None:
            if batch_indices is None:
                raise ValueError("predictions have no 'index' and Lightning gave no batch indices; return the dataset "
                                 "positions as 'index' from predict_step")
            index = torch.as_tensor(list(batch_indices))
        index = torch.as_tensor(index).long().cpu().reshape(-1)
        rows = {"index": index}
        for key, value in prediction.items():
            if key == "index" or not isinstance(value, torch.Tensor):
                continue
            if value.shape[0] != len(index):
                raise ValueError(f"prediction {key!r} has {value.shape[0]} rows but the batch has {len(index)} items")
            rows[key] = value.detach().cpu().contiguous()
        self._buffer.append(rows)
        if sum(len(b["index"]) for b in self._buffer) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        from safetensors.torch import save_file

        keys = list(self._buffer[0])
        if any(list(b) != keys for b in self._buffer):
            found = sorted({tuple(b) for b in self._buffer})
            raise ValueError(f"predict_step returned different keys across batches: {found}")
        tensors = {key: torch.cat([b[key] for b in self._buffer]) for key in keys}
        name = f"rank{self._rank:05d}-part{len(self._parts):05d}.safetensors"
        with atomic_path(self.folder / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format": SHARD_FORMAT, "run_id": self._run_id})
        self._parts.append(name)
        self._rows += len(tensors["index"])
        self._buffer = []

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()
        index = {"format": SHARD_FORMAT, "run_id": self._run_id, "rank": self._rank, "world_size": self._world,
                 "parts": self._parts, "rows": self._rows, "dataset_length": self._length,
                 "failures": self._failures}
        with atomic_path(self.folder / f"rank{self._rank:05d}.json") as tmp:
            tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


@dataclass
class MergedPredictions:
    """``tensors``: ``index`` [n] (the dataset positions that were read, sorted; 0..n-1 when none failed) and every
    predicted key in that order; ``num_items``: the dataset's length; ``duplicates``: repeated rows dropped;
    ``world_size`` of the run; ``path`` of the merged file (or None); ``failures``: path -> error of inputs that
    could not be read (also in ``failures.csv`` beside the merged file); ``failed_indices``: their dataset positions."""

    tensors: dict[str, torch.Tensor] = field(repr=False)
    num_items: int
    duplicates: int
    world_size: int
    path: Path | None
    failures: dict[str, str] = field(default_factory=dict)
    failed_indices: list[int] = field(default_factory=list)


def merge_shards(folder: str | os.PathLike, *, output: str | os.PathLike | None = "predictions.safetensors",
                 expected_length: int | None = None, failures: dict[str, str] | None = None) -> MergedPredictions:
    """Merge a :class:`ShardedPredictionWriter` folder into one table ordered by dataset index.

    Raises FileNotFoundError when no rank index or a listed part is missing (a rank that did not finish), ValueError
    for shards of different runs or when any index in ``0 .. length - 1`` is missing or out of range (``length``:
    ``expected_length``, else the dataset length the ranks recorded); indices the ranks recorded as unreadable are
    not missing but reported. ``output`` (relative to ``folder``, or None to skip writing) receives the merged
    tensors atomically, and ``failures.csv`` beside it lists the unreadable inputs, with ``failures`` (path -> error,
    e.g. ``dataset.failures`` of files left out before prediction).
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("rank*.json"))]
    if not records:
        raise FileNotFoundError(f"no rank*.json shard index in {folder}; did the prediction run finish on every rank?")
    runs, worlds = {r.get("run_id") for r in records}, {r.get("world_size") for r in records}
    if len(runs) != 1 or len(worlds) != 1 or any(r.get("format") != SHARD_FORMAT for r in records):
        raise ValueError(f"{folder} mixes shards of different runs (run ids {sorted(map(str, runs))}, world sizes "
                         f"{sorted(map(str, worlds))}); predict into an empty folder")
    world = worlds.pop()
    missing_ranks = sorted(set(range(world)) - {r["rank"] for r in records})
    if missing_ranks:
        raise FileNotFoundError(f"{folder}: ranks {missing_ranks} of {world} wrote no index; they did not finish")
    lengths = {r["dataset_length"] for r in records} - {None}
    length = expected_length if expected_length is not None else (lengths.pop() if len(lengths) == 1 else None)
    if length is None:
        raise ValueError(f"the dataset length is unknown (recorded: {sorted(lengths)}); pass expected_length=")
    parts = []
    for record in sorted(records, key=lambda r: r["rank"]):
        for name in record["parts"]:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is listed by rank {record['rank']} but missing")
            parts.append(load_file(str(folder / name)))
    if not parts:
        raise ValueError(f"{folder}: the ranks wrote no predictions, but {length} items were expected")
    keys = sorted(parts[0])
    if any(sorted(p) != keys for p in parts):
        raise ValueError(f"shards in {folder} hold different keys: {sorted({tuple(sorted(p)) for p in parts})}")
    index = torch.cat([p["index"] for p in parts]).numpy()
    unique, first = np.unique(index, return_index=True)
    failed = sorted({(i, path, error) for r in records for i, path, error in r.get("failures", [])})
    failed_indices = sorted({i for i, _, _ in failed})
    known = np.union1d(unique, np.asarray(failed_indices, dtype=unique.dtype))
    outside = known[(known < 0) | (known >= length)]
    absent = np.setdiff1d(np.arange(length), known)
    if len(outside) or len(absent):
        raise ValueError(f"{folder}: {len(absent)} of {length} indices missing (first: {absent[:20].tolist()}) and "
                         f"{len(outside)} out of range ({outside[:20].tolist()}); the predictions are incomplete")
    take = torch.as_tensor(first)
    tensors = {key: torch.cat([p[key] for p in parts])[take].contiguous() for key in keys}
    unreadable = dict(failures or {})
    for _, path, error in failed:
        unreadable.setdefault(path, error)
    path = None
    if output is not None:
        path = folder / output
        meta = {"format": SHARD_FORMAT, "num_items": str(length), "world_size": str(world),
                "duplicates": str(len(index) - len(unique)), "failures": json.dumps(unreadable, sort_keys=True)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        if unreadable:
            from ..embed.outputs import write_failures

            write_failures(path.parent / "failures.csv", unreadable)
    return MergedPredictions(tensors, int(length), int(len(index) - len(unique)), int(world), path, unreadable,
                             failed_indices)


def extract_embeddings_distributed(model: AvexModel, data, folder: str | os.PathLike, *,
                                   layers: str | int | list[int] = "last", pooling: str = "mean",
                                   batch_size: int = 8, num_workers: int = 0, overwrite: bool = False,
                                   flush_every: int = 4096, **trainer_kwargs) -> MergedPredictions | None:
    """Embeddings of every item of ``data`` (an AudioDataset, e.g. :func:`window_dataset`) with ``Trainer.predict``
    on the devices, processes and nodes ``trainer_kwargs`` name (``accelerator``, ``devices``, ``strategy``,
    ``num_nodes``, ``precision``). Shards go to ``folder``; rank 0 merges them into
    ``folder/predictions.safetensors`` and returns the :class:`MergedPredictions`; other ranks return None.
    Inputs that cannot be read are skipped on any rank and reported in ``failures`` (with ``data.failures``, files
    :func:`window_dataset` left out) and ``folder/failures.csv``, with a warning that counts them.

    The process group stays up for whatever the script does next; end the script with
    ``torch.distributed.destroy_process_group()`` (a gloo group alive at exit can abort the process there)."""
    loader = torch.utils.data.DataLoader(_SkipUnreadable(data), batch_size=batch_size, shuffle=False,
                                         collate_fn=_collate_skipping, num_workers=num_workers)
    writer = ShardedPredictionWriter(folder, flush_every=flush_every, overwrite=overwrite)
    settings = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False, **trainer_kwargs}
    settings["callbacks"] = [*settings.get("callbacks", []), writer]
    trainer = L.Trainer(**settings)
    trainer.predict(AvexLightningEmbedder(model, layers=layers, pooling=pooling), loader, return_predictions=False)
    trainer.strategy.barrier("avex_shards_written")
    merged, error, problem = None, None, None
    if trainer.is_global_zero:
        try:
            merged = merge_shards(folder, failures=dict(getattr(data, "failures", None) or []))
            if merged.failures:
                warnings.warn(f"{len(merged.failures)} inputs could not be read and have no embeddings; see "
                              f"MergedPredictions.failures and {Path(folder) / 'failures.csv'}", stacklevel=2)
        except (OSError, ValueError) as e:  # told to every rank, so none waits forever
            error, problem = e, f"{type(e).__name__}: {e}"
    problem = trainer.strategy.broadcast(problem, src=0)
    if error is not None:
        raise error
    if problem:
        raise RuntimeError(f"rank 0 could not merge the prediction shards: {problem}")
    return merged
