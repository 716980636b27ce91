"""Datasets of audio files for probes, fine-tuning and evaluation: class folders or a CSV manifest in,
16 kHz mono clips with labels out.

    from avex_hub.audio.datasets import AudioDataset
    train = AudioDataset.from_manifest("data/manifest.csv", split="train", clip_s=5.0, random_crop=True)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, collate_fn=AudioDataset.collate)

Every file goes through :func:`avex_hub.audio.decoding.load_audio` (any sample rate and channel count in; the mono mix,
or the chosen channel, at 16 kHz out), reading only the ``[start_s, end_s)`` range an item asks for.

Nothing is dropped silently. Files listed but missing fail at construction, all named in one error, or with
``on_error="skip"`` are left out with a warning that counts them and recorded in ``dataset.failures``.
``dataset.check()`` opens every file's header up front in the same way. A file that fails while loading an
item always raises an error naming it: substituting another item would hide the problem.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from .arrays import MIX_CHANNEL, SAMPLE_RATE, WINDOW_S
from .collate import collate_audio, pad_or_crop
from .decoding import AudioDecodeError, audio_info, load_audio
from .folders import AUDIO_EXTENSIONS
from .items import AudioItem, as_item, checked_labels, folder_items, labels_once, listing, several_labels
from .manifest import manifest_items, rows_of_split
from ..storage.locations import is_url
from ..storage.objects import exists

__all__ = ["AudioDataset", "AudioItem", "AUDIO_EXTENSIONS", "check_dataset_rate"]


def check_dataset_rate(dataset, model, role: str = "the dataset") -> None:
    """Raise ValueError when ``dataset`` (an :class:`AudioDataset`, or a ``Subset`` of one) yields audio at another
    rate than ``model.sample_rate``; datasets without a ``target_rate`` (file lists, arrays) pass."""
    while not hasattr(dataset, "target_rate") and hasattr(dataset, "dataset"):  # torch.utils.data.Subset
        dataset = dataset.dataset
    rate = getattr(dataset, "target_rate", None)
    if rate is not None and rate != model.sample_rate:
        fix = (f"build the dataset with target_rate={model.sample_rate} (the default; files are resampled to it)"
               if isinstance(dataset, AudioDataset) else f"use a model that takes {rate} Hz audio")
        raise ValueError(f"{role} yields {rate} Hz audio but {model.name} takes {model.sample_rate} Hz; {fix}")


# -- files that cannot be used ----------------------------------------------------------------------------------------
def _drop_bad(items: list[AudioItem], bad: dict[int, str], what: str, error: type[Exception], *, on_error: str,
              source: str) -> tuple[list[AudioItem], list[tuple[str, str]]]:
    """The items without the ``bad`` ones (position -> reason) and the failures ``(path, reason)`` to record.

    With ``on_error="raise"`` one ``error`` names every bad item; with ``"skip"`` a warning to the caller's
    caller counts them, and a ValueError follows when they were all the items there were.
    """
    if not bad:
        return items, []
    lines = [f"{items[i].path}: {reason}" for i, reason in bad.items()]
    if on_error == "raise":
        raise error(f"{len(bad)} of {len(items)} items from {source} {what}:" + listing(lines)
                    + "\nfix them, or pass on_error='skip' to leave them out (listed in dataset.failures)")
    warnings.warn(f"skipped {len(bad)} of {len(items)} items from {source} whose files {what} "
                  "(see dataset.failures)", stacklevel=3)
    kept = [item for i, item in enumerate(items) if i not in bad]
    if not kept:
        raise ValueError(f"no usable audio items left in {source}: all {len(bad)} were skipped "
                         f"({lines[0]}{' ...' if len(lines) > 1 else ''})")
    return kept, [(str(items[i].path), reason) for i, reason in bad.items()]


def _missing(items: list[AudioItem]) -> dict[int, str]:
    """Position -> reason for every item whose file does not exist (or whose store cannot say: the store's reason)."""
    missing = {}
    for i, item in enumerate(items):
        try:
            found = exists(item.path) if is_url(item.path) else item.path.is_file()
        except OSError as error:  # a store that cannot say (unreachable, access denied)
            missing[i] = str(error)
            continue
        if not found:
            missing[i] = "file not found"
    return missing


def _header_problems(items: list[AudioItem], channels) -> dict[int, str]:
    """Position -> reason for every item whose file header cannot be read, whose ``start_s`` or ``end_s`` is past
    the end of the file, or whose channel (the item's, else ``channels`` when an index) the file does not have."""
    bad = {}
    for i, item in enumerate(items):
        try:
            info = audio_info(item.path)
        except (OSError, AudioDecodeError) as e:
            bad[i] = str(e)
            continue
        if item.start_s is not None and item.start_s >= info.duration_s:
            bad[i] = f"start_s={item.start_s} is past the end of the file ({info.duration_s:.3f} s)"
        elif item.end_s is not None and item.end_s > info.duration_s + 1e-3:
            bad[i] = f"end_s={item.end_s} is past the end of the file ({info.duration_s:.3f} s)"
        channel = channels if item.channel is None else item.channel
        if isinstance(channel, int) and not -info.channels <= channel < info.channels:
            bad[i] = f"channel {channel} requested, the file has {info.channels} channels"
    return bad


def _one_item_per_channel(items: list[AudioItem], *, on_error: str, source: str
                          ) -> tuple[list[AudioItem], list[tuple[str, str]]]:
    """Each item once per channel of its file (``channel`` set), as the headers count them, and the failures
    ``(path, error)`` of headers that cannot be read (raised unless ``on_error="skip"``, see :func:`_drop_bad`)."""
    counts, bad = {}, {}
    for i, item in enumerate(items):
        try:
            counts[i] = audio_info(item.path).channels
        except (OSError, AudioDecodeError) as e:
            bad[i] = str(e)
    kept, failures = _drop_bad(items, bad, "cannot be opened", AudioDecodeError, on_error=on_error, source=source)
    counts = [c for i, c in sorted(counts.items()) if i not in bad]
    return [replace(item, channel=channel) for item, count in zip(kept, counts) for channel in range(count)], failures


# -- one item's audio ---------------------------------------------------------------------------------------------
def _clip_range(item: AudioItem, clip_s: float | None, random_crop: bool, generator: torch.Generator | None,
                target_rate: int) -> tuple[float, float | None]:
    """The seconds ``[start, end)`` to decode: the item's range, or with ``clip_s`` at most ``clip_s`` of it from
    its start or (``random_crop``) from an offset drawn with ``generator`` (None: torch's global RNG) on the
    ``target_rate`` sample grid."""
    start, end = item.start_s or 0.0, item.end_s
    if clip_s is None:
        return start, end
    if random_crop:
        span = (item.end_s or audio_info(item.path).duration_s) - start
        slack = max(0, int(round((span - clip_s) * target_rate)))
        start += int(torch.randint(0, slack + 1, (1,), generator=generator)) / target_rate
    return start, start + clip_s if end is None else min(end, start + clip_s)


def _load_item(item: AudioItem, index: int, *, clip_s: float | None, random_crop: bool,
               generator: torch.Generator | None, channels, target_rate: int) -> dict:
    """An item's audio fields: ``audio`` [S] float32 at ``target_rate`` (cropped or zero padded to ``clip_s``),
    ``padding_mask`` [S] bool, ``path``, ``index``, ``start_s`` (seconds into the file), ``channel`` and
    ``flags``. A file that has gone missing raises FileNotFoundError; any other failure an AudioDecodeError
    naming the item and its file, also an ``end_s`` past the end of the file (it would be padded without a word)."""
    try:
        start, end = _clip_range(item, clip_s, random_crop, generator, target_rate)
        audio = load_audio(item.path, target_rate=target_rate, channels=channels if item.channel is None else
                           item.channel, start_s=start if start > 0 else None, end_s=end)
        wave, channel, flags = audio.waveform[0], audio.channels[0], audio.flags[0]
    except FileNotFoundError:
        raise
    except Exception as e:
        raise AudioDecodeError(f"dataset item {index} ({item.path}): {e}") from e
    reached = audio.start_s + wave.shape[-1] / target_rate
    if item.end_s is not None and end is not None and reached + 2 / target_rate < end:  # 2 samples: resampling
        raise AudioDecodeError(f"dataset item {index} ({item.path}): end_s={item.end_s} is past the end of the file "
                               f"({reached:.3f} s); fix the item's end_s")
    if clip_s is not None:
        wave, mask = pad_or_crop(wave, max(1, int(round(clip_s * target_rate))))
    else:
        mask = torch.zeros(wave.shape, dtype=torch.bool)
    return {"audio": wave, "padding_mask": mask, "path": str(item.path), "index": index, "start_s": audio.start_s,
            # the same contract as the CLI's outputs: -1 is the mono mix; flags are outputs.FLAG_NAMES
            # (clipped, silent, too_short, truncated)
            "channel": MIX_CHANNEL if channel is None else channel,
            "flags": torch.tensor([flags.clipped, flags.silent, flags.too_short, flags.truncated])}


class AudioDataset(torch.utils.data.Dataset):
    """Labelled audio clips as ``dict(audio [S] float32, padding_mask [S] bool, label | target, path, index,
    start_s, ...)``; build it with :meth:`from_folder` or :meth:`from_manifest`, or from items directly.

    Args:
        items: file paths (unlabelled), :class:`AudioItem` objects or tuples ``(path, labels, start_s, end_s,
            extra)``; ``labels`` is a string (``;`` separates several) or a sequence of strings. A label listed twice
            for one item counts once (with a warning naming the item).
        label_map: the label order: a list of names, ``{name: index}``, a LabelMap or a ``labels.json`` path.
            Default: the sorted set of labels present. Labels outside a given map are an error.
        clip_s: every clip is cropped or zero padded to this many seconds (``padding_mask`` marks the padding);
            ``None`` keeps natural lengths and :meth:`collate` pads a batch to its longest clip.
        random_crop: crop at a random offset (training) rather than from the start. ``seed=None`` draws from
            torch's global RNG (new crops every epoch and per DataLoader worker); an integer seed makes the crop
            a function of ``(seed, epoch, index)``; call :meth:`set_epoch` to vary it between epochs.
        channels: ``"mix"`` (mean of channels), a channel index, or ``"all"`` (one item per channel; headers
            are read at construction to count channels).
        multilabel: ``target`` multi-hot float ``[num_classes]`` instead of an integer ``label``; default: on
            when any item has several labels.
        on_error: ``"raise"`` or ``"skip"`` for files missing at construction and failures found by
            :meth:`check`; skipped files are counted in a warning and listed in :attr:`failures`.
        target_rate: the rate items are resampled to (default the model's 16 kHz); every consumer that feeds
            the dataset to a model refuses one whose ``target_rate`` differs from ``model.sample_rate``.
        source: what the items came from, for messages.
    """

    collate = staticmethod(collate_audio)

    def __init__(self, items: Sequence, *, label_map=None, clip_s: float | None = WINDOW_S, random_crop: bool = False,
                 seed: int | None = None, channels="mix", target_rate: int = SAMPLE_RATE,
                 multilabel: bool | None = None, on_error: str = "raise", source: str = "the given items") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if clip_s is not None and not clip_s > 0:
            raise ValueError(f"clip_s must be positive seconds or None (variable length), got {clip_s!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0):
            raise ValueError(f"seed must be an int >= 0 or None (torch's global RNG), got seed={seed!r}")
        self.clip_s, self.random_crop, self.seed, self.epoch = clip_s, random_crop, seed, 0
        self.channels, self.target_rate, self.on_error, self.source = channels, int(target_rate), on_error, source
        self.items = labels_once([as_item(entry) for entry in items], source)
        if not self.items:
            raise ValueError(f"no audio items in {source}; expected at least one file to load")
        self._labels, self.multilabel = checked_labels(self.items, label_map, multilabel, source)
        self._label_to_index = {name: i for i, name in enumerate(self._labels)}
        self.items, self.failures = _drop_bad(self.items, _missing(self.items), "are missing", FileNotFoundError,
                                              on_error=on_error, source=source)
        if channels == "all":
            self.items, failed = _one_item_per_channel(self.items, on_error=on_error, source=source)
            self.failures += failed

    def check(self, *, on_error: str | None = None) -> list[tuple[str, str]]:
        """Open every file's header (no decoding) and check its time range; returns the failures found.

        With ``on_error="raise"`` (the dataset's setting unless given) one AudioDecodeError lists every bad
        file; with ``"skip"`` they are removed, added to :attr:`failures` and counted in a warning. A check
        that would leave no item raises ValueError and leaves the dataset as it was.
        """
        if on_error not in (None, "raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        bad = _header_problems(self.items, self.channels)
        self.items, failed = _drop_bad(self.items, bad, "cannot be read", AudioDecodeError,
                                       on_error=on_error or self.on_error, source=self.source)
        self.failures += failed
        return failed

    validate_files = check

    # -- constructors ---------------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, root: str | os.PathLike, *, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                    label_map=None, on_error: str = "raise", **kwargs) -> "AudioDataset":
        """Files under ``root/<label>/`` (any depth below it) labelled by their class folder's name.

        Labels are the sorted folder names unless ``label_map`` is given. Hidden files and folders (``.name``)
        and audio lying directly in ``root`` are left out and counted in a warning. Linked folders are followed
        (:func:`avex_hub.audio.folders.find_audio`); a folder that cannot be listed raises PermissionError, or with
        ``on_error="skip"`` is warned about and listed in :attr:`failures`. ``kwargs`` go to the constructor.
        """
        root = Path(root)
        items, unlisted = folder_items(root, extensions, on_error)
        dataset = cls(items, label_map=label_map, source=f"folder {root}", on_error=on_error, **kwargs)
        if unlisted:  # on_error="skip": counted and listed like any other skipped input
            warnings.warn(f"{root}: skipped {len(unlisted)} folder(s) that could not be listed (see .failures)",
                          stacklevel=2)
            dataset.failures.extend(unlisted.items())
        return dataset

    @classmethod
    def from_manifest(cls, csv_path: str | os.PathLike, *, label_map=None, split: str | Sequence[str] | None = None,
                      label_column: str = "label", root: str | os.PathLike | None = None,
                      **kwargs) -> "AudioDataset":
        """Rows of a CSV with columns ``path`` and ``label`` (``;`` joins several labels), optional ``start_s``
        and ``end_s`` (seconds; empty = whole file) and ``split``; other columns come back with each item.

        Relative paths are relative to the CSV's folder (or ``root``). ``split`` keeps rows whose ``split`` is
        that value (or one of several). Unless given, the label order (sorted) and ``multilabel`` are taken from
        all rows, before the split filter, so train/val/test datasets agree. ``label_column`` picks another
        column as the label, e.g. ``"individual"``; without that column the dataset is unlabelled.
        """
        csv_path = Path(csv_path)
        items = manifest_items(csv_path, base=Path(root) if root is not None else csv_path.parent,
                                label_column=label_column, split=split)
        if kwargs.get("multilabel") is None:
            kwargs["multilabel"] = several_labels(items)
        if label_map is None:  # the labels of all rows, before the split filter; None when no row has one
            label_map = sorted({name for item in items for name in item.labels}) or None
        return cls(rows_of_split(items, split, csv_path), label_map=label_map, source=f"manifest {csv_path}", **kwargs)

    # -- the Dataset protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Vary seeded random crops between epochs (no effect with ``seed=None``)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        state = np.random.SeedSequence([int(self.seed), self.epoch, index]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index = index % len(self)
        item = self.items[index]
        out = _load_item(item, index, clip_s=self.clip_s, random_crop=self.random_crop, channels=self.channels,
                         generator=self._generator(index) if self.random_crop else None, target_rate=self.target_rate)
        if self._labels and self.multilabel:
            target = torch.zeros(self.num_classes)
            target[[self._label_to_index[name] for name in item.labels]] = 1.0
            out["target"] = target
        elif self._labels:
            out["label"] = torch.tensor(self._label_to_index[item.labels[0]])
        out.update(item.extra)
        return out

    # -- what people look up --------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Label names in index order."""
        return list(self._labels)

    @property
    def label_to_index(self) -> dict[str, int]:
        return dict(self._label_to_index)

    @property
    def num_classes(self) -> int:
        return len(self._labels)

    @property
    def targets(self) -> np.ndarray:
        """Integer labels ``[N]``, or multi-hot float32 ``[N, num_classes]`` for a multi-label dataset."""
        if not self.multilabel:
            return np.array([self._label_to_index[item.labels[0]] for item in self.items] if self._labels else [],
                            dtype=np.int64)
        out = np.zeros((len(self.items), self.num_classes), dtype=np.float32)
        for row, item in enumerate(self.items):
            out[row, [self._label_to_index[name] for name in item.labels]] = 1.0
        return out

    def save_label_map(self, path: str | os.PathLike) -> None:
        """Write the label order as ``{"name": index}`` (the format of ``labels.json`` and model label maps)."""
        Path(path).write_text(json.dumps(self._label_to_index, indent=1, ensure_ascii=False) + "\n", "utf-8")

    def __repr__(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        failed = f", {len(self.failures)} failures" if self.failures else ""
        return (f"AudioDataset({len(self)} items, {self.num_classes} classes ({kind}), clip_s={self.clip_s}, "
                f"from {self.source}{failed})")

    def with_label_order(self, label_map) -> "AudioDataset":
        """This dataset with its labels indexed by ``label_map`` (names in order, ``{name: index}``, a LabelMap or a
        ``labels.json`` path): ``label``/``target`` and :attr:`targets` follow that order, a class it adds gets no
        item. Splits built separately (two :meth:`from_folder` calls) are compared by name this way. ValueError
        naming every label of an item that ``label_map`` lacks. Like :meth:`subset`, a shallow copy."""
        part = copy.copy(self)
        part._labels, _ = checked_labels(self.items, label_map, self.multilabel, self.source)
        part._label_to_index = {name: i for i, name in enumerate(part._labels)}
        part.failures = list(self.failures)
        return part

    def subset(self, indices) -> "AudioDataset":
        """The items at ``indices`` (positions, in that order; negative ones count from the end) or where a boolean
        mask of ``len(self)`` entries is true, as a dataset with this one's settings: the label order, clip length,
        crops and their seed and epoch, channels, rate, multilabel, ``on_error`` and ``source``.

        The subset is a shallow copy of this dataset with only its item list replaced, so every setting carries
        over, also one added to the class later; no file is opened again. ``failures`` starts empty: the files
        skipped belong to the dataset that skipped them.
        """
        n = len(self)
        rows = np.asarray(indices)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean mask needs one entry per item ({n}), got shape {rows.shape}")
            rows = np.flatnonzero(rows)
        if rows.size == 0:
            raise ValueError(f"a subset of {self.source} needs at least one item, got none")
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise TypeError(f"subset takes integer positions or a boolean mask, got {rows.dtype} values of shape "
                            f"{rows.shape}")
        outside = sorted({int(i) for i in rows if not -n <= i < n})
        if outside:
            raise IndexError(f"subset positions {outside[:10]}{' ...' if len(outside) > 10 else ''} are out of range "
                             f"for a dataset of {n} items; expected 0..{n - 1} (or -{n}..-1 from the end)")
        part = copy.copy(self)
        part.items = [self.items[i] for i in rows.tolist()]
        part.failures = []
        return part
