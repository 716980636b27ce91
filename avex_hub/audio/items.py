"""What a dataset is made of: items (a file or a span of it, its labels and metadata), the items of class
folders, and the checks on their labels (the label order, single- or multi-label, labels outside a given map).

:mod:`avex_hub.audio.manifest` reads manifests into items; :class:`avex_hub.audio.datasets.AudioDataset` loads them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .folders import find_audio
from ..labels import LabelMap
from ..storage.locations import is_url, local_path

__all__ = ["AudioItem", "as_item", "split_labels", "listing", "folder_items", "labels_once", "several_labels",
           "checked_labels"]

_LISTED = 100  # at most this many problems spelled out in one message


@dataclass(frozen=True)
class AudioItem:
    """One example: a file (or the ``[start_s, end_s)`` seconds of it), its labels and extra metadata."""

    path: Path | str  # a local path, or a URL (s3://, gs://, https://) as a str
    labels: tuple[str, ...] = ()
    start_s: float | None = None
    end_s: float | None = None
    extra: dict = field(default_factory=dict)
    origin: str = ""  # where the item was declared, for messages ("manifest.csv line 7")
    channel: int | None = None  # set when channels="all" expands a file into one item per channel


def as_item(entry) -> AudioItem:
    """An :class:`AudioItem` from an item, a file path (unlabelled) or a tuple ``(path, labels, start_s, end_s,
    extra)``."""
    if isinstance(entry, (str, os.PathLike)):
        return AudioItem(_path(entry), origin=str(entry))
    if isinstance(entry, AudioItem):
        return entry if isinstance(entry.path, Path) or is_url(entry.path) else replace(entry, path=_path(entry.path))
    path, labels, start_s, end_s, extra = (tuple(entry) + (None, None, None, None))[:5]
    labels = split_labels(labels) if isinstance(labels, str) or labels is None else tuple(map(str, labels))
    return AudioItem(_path(path), labels, start_s, end_s, dict(extra or {}))


def _path(path) -> Path | str:
    """A URL stays a str (a Path would fold its ``//``); a ``file://`` URL and anything else become a Path."""
    return path if isinstance(path, str) and is_url(path) else Path(local_path(path) if isinstance(path, str) else path)


def split_labels(cell: str | None) -> tuple[str, ...]:
    """A label cell's labels: ``;`` separates several, blanks around them and empty parts are dropped."""
    return tuple(part.strip() for part in (cell or "").split(";") if part.strip())


def _label_order(label_map) -> list[str] | None:
    """A label map as names in index order: list/tuple, {name: index}, LabelMap, or a labels.json path."""
    if label_map is None:
        return None
    if isinstance(label_map, (str, os.PathLike)):
        return list(LabelMap.from_json(label_map).names)
    if isinstance(label_map, Mapping):
        return list(LabelMap(dict(label_map), source="label_map").names)
    return list(LabelMap.from_names([str(name) for name in label_map]).names)


def listing(lines: list[str]) -> str:
    """Problems one per indented line, at most 100 of them and a count of the rest."""
    more = f"\n  ... and {len(lines) - _LISTED} more" if len(lines) > _LISTED else ""
    return "\n  " + "\n  ".join(lines[:_LISTED]) + more


# -- class folders as items ---------------------------------------------------------------------------
def folder_items(root: Path, extensions: Sequence[str], on_error: str) -> tuple[list[AudioItem], dict[str, str]]:
    """Files under ``root/<label>/`` (any depth) as items labelled by their class folder, and the folders that
    could not be listed (path -> error), which raise PermissionError unless ``on_error="skip"``. Audio directly
    in ``root`` and hidden files are left out and counted in a warning to the caller of ``from_folder``."""
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root} (expected {root}/<label>/<files>)")
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    search = find_audio([root], extensions=suffixes)
    if search.failures and on_error == "raise":
        raise PermissionError(f"{root}: {len(search.failures)} folder(s) could not be listed, so their files "
                              "would be missing: " + listing([f"{k}: {v}" for k, v in search.failures.items()])
                              + "\nfix their permissions, or pass on_error='skip' to go on without them")
    items, loose = [], 0
    for name in search.files:
        path = Path(name)
        parts = path.relative_to(root).parts
        if len(parts) == 1:
            loose += 1
        else:
            items.append(AudioItem(path, (parts[0],), origin=str(path)))
    ignored = [f"{n} {what}" for n, what in ((loose, "directly in the root folder (no class folder)"),
                                             (search.hidden, "hidden files or folders")) if n]
    if not items:
        raise ValueError(f"no audio files with extensions {suffixes} in class sub-folders of {root}; expected "
                         f"{root}/<label>/<file>" + (f" (ignored: {', '.join(ignored)})" if ignored else ""))
    if ignored:
        warnings.warn(f"{root}: ignored audio files: {', '.join(ignored)}", stacklevel=3)
    return items, search.failures


# -- labels ---------------------------------------------------------------------------------------------------------
def labels_once(items: list[AudioItem], source: str) -> list[AudioItem]:
    """The items with each label listed once (``A;A`` is the one label ``A``, so it does not make a dataset
    multi-label); a warning names the items whose labels repeated."""
    repeated = [i for i, item in enumerate(items) if len(set(item.labels)) < len(item.labels)]
    if not repeated:
        return items
    warnings.warn(f"{source}: {len(repeated)} items list a label more than once; each is counted once:"
                  + listing([f"{items[i].origin or items[i].path}: {list(items[i].labels)}" for i in repeated]),
                  stacklevel=3)
    out = list(items)
    for i in repeated:
        out[i] = replace(items[i], labels=tuple(dict.fromkeys(items[i].labels)))
    return out


def several_labels(items: list[AudioItem]) -> bool:
    """Whether any item has more than one label: the default of ``multilabel``."""
    return any(len(item.labels) > 1 for item in items)


def checked_labels(items: list[AudioItem], label_map, multilabel: bool | None,
                    source: str) -> tuple[list[str], bool]:
    """The label order (``label_map``'s, else the sorted labels present) and whether the dataset is multi-label.

    ValueError lists every label outside a given map, or, for a labelled single-label dataset, every item that
    does not have exactly one label.
    """
    order = _label_order(label_map)
    if order is not None:
        _check_known(items, order, source)
    labels = order if order is not None else sorted({name for item in items for name in item.labels})
    multilabel = several_labels(items) if multilabel is None else bool(multilabel)
    if labels and not multilabel:
        unlabelled = [f"{item.origin or item.path}: {len(item.labels)} labels {list(item.labels)}"
                      for item in items if len(item.labels) != 1]
        if unlabelled:
            raise ValueError(f"single-label dataset from {source}: {len(unlabelled)} items do not have exactly "
                             f"one label (pass multilabel=True for 0 or several labels per item):"
                             + listing(unlabelled))
    return labels, multilabel


def _check_known(items: list[AudioItem], order: list[str], source: str) -> None:
    """ValueError naming every label not in ``order``, where each is used, and the known labels."""
    known, unknown = set(order), {}
    for item in items:
        for name in item.labels:
            if name not in known:
                unknown.setdefault(name, []).append(item.origin or str(item.path))
    if unknown:
        lines = [f"{name!r} ({', '.join(where[:5])}{' ...' if len(where) > 5 else ''})"
                 for name, where in unknown.items()]
        preview = order if len(order) <= 50 else order[:50] + ["..."]
        raise ValueError(f"{source} has labels that are not in the label map ({len(unknown)}):"
                         + listing(lines)
                         + f"\nknown labels ({len(order)}): {preview}")
