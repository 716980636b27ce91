"""The splits :func:`avex_hub.heads.evaluation.evaluate` scores: ``(train, test)``, ``(train, val, test)``, a dict,
the splits a dataset's rows declare (never split again), or a seeded stratified split of a dataset that declares
none; val and test aligned to the train split's labels by name.
"""

from __future__ import annotations

import numpy as np
import torch

from ..audio.datasets import AudioDataset
from ..audio.items import listing
from ..audio.manifest import SPLIT_SPELLINGS, canonical_split
from ..embed.extract import Embeddings
from .targets import align_labels, label_names_of, split_indices
from .train_options import check_count

__all__ = ["resolve_splits", "ROLES"]

ROLES = ("train", "val", "test")


def _subset(data, rows, role: str):
    """Rows of a dataset as a dataset of the same kind (Embeddings or AudioDataset, every setting kept)."""
    if not isinstance(data, (Embeddings, AudioDataset)):
        raise TypeError(f"cannot split a {type(data).__name__}; pass (train, test) or (train, val, test) splits")
    part = data.subset(rows)
    if isinstance(part, AudioDataset):
        part.source = f"{data.source} ({role} split)"  # messages name the split
    return part


def _labels_of(data) -> np.ndarray:
    if isinstance(data, Embeddings):
        if data.labels is None:
            raise ValueError("the embeddings have no labels; evaluation needs labelled clips")
        return data.labels.numpy()
    targets = getattr(data, "targets", None)
    if targets is None or len(targets) == 0:
        raise ValueError(f"{type(data).__name__} has no labels; evaluation needs labelled clips")
    return np.asarray(targets)


def resolve_splits(data, *, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """``{"train": ..., "val": ... (optional), "test": ...}`` from any of the accepted forms (module docstring)."""
    check_count("seed", seed, 0)
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(ROLES))
        if unknown or "train" not in data or "test" not in data:
            raise ValueError(f"splits need keys 'train' and 'test' (and optionally 'val'); got {sorted(data)}")
        splits = {k: v for k, v in data.items() if v is not None}
    elif isinstance(data, (tuple, list)):
        if len(data) not in (2, 3):
            raise ValueError(f"expected (train, test) or (train, val, test) splits, got {len(data)} items")
        splits = dict(zip(("train", "test") if len(data) == 2 else ROLES, data))
    else:
        declared = _declared_splits(data)
        if declared is not None:
            splits = {role: _subset(data, rows, role) for role, rows in declared.items()}
        else:
            if not 0.0 < test_fraction < 1.0:
                raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
            if len(data) < 2:
                raise ValueError(f"cannot split {len(data)} clip(s) into train and test; expected at least 2")
            keep, held = split_indices(torch.as_tensor(_labels_of(data)), test_fraction, seed)
            if not len(held) or not len(keep):
                raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {len(data)} clips")
            splits = {"train": _subset(data, keep, "train"), "test": _subset(data, held, "test")}
    for role, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"the {role} split is empty; expected at least one labelled clip")
    return _aligned(splits)


def _aligned(splits: dict) -> dict:
    """The val and test splits with their labels in the train split's order (by name; see
    :func:`avex_hub.heads.targets.align_labels`), all of them single-label or all multi-label."""
    reference = label_names_of(splits["train"])
    out = {role: align_labels(data, reference, f"the {role} split", "the train split") if role != "train" else data
           for role, data in splits.items()}
    kinds = {role: bool(getattr(data, "multilabel", False)) for role, data in out.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"the splits disagree on multi-label (True: several labels per clip): {kinds}; build them "
                         "alike (a manifest read once decides it from all rows; else pass multilabel=)")
    return out


def _declared_splits(data) -> dict[str, list[int]] | None:
    """The rows of each split a dataset's items declare (``extra["split"]``, as a manifest's ``split`` column gives
    them, spelt as :data:`avex_hub.audio.manifest.SPLIT_SPELLINGS` allows); None when no item declares one.

    A dataset that declares splits is never split again: a row with another value or none, or no train or no
    test row, is a ValueError naming the rows."""
    items = getattr(data, "items", None)
    if not isinstance(items, list) or not any("split" in getattr(item, "extra", {}) for item in items):
        return None
    rows, bad = {}, []
    for i, item in enumerate(items):
        value = item.extra.get("split")
        role = canonical_split(value) if value is not None else ""
        if role in ROLES:
            rows.setdefault(role, []).append(i)
        else:
            bad.append(f"{item.origin or item.path}: " + (f"split={value!r}" if role else "no split (empty cell)"))
    if bad:
        raise ValueError(f"{getattr(data, 'source', 'the dataset')} declares splits, but {len(bad)} rows are in "
                         f"none of train, val, test (spelt {sorted(SPLIT_SPELLINGS)}, any case):" + listing(bad)
                         + "\nfix their split cells; a dataset that declares splits is never split at random")
    missing = [role for role in ("train", "test") if role not in rows]
    if missing:
        raise ValueError(f"{getattr(data, 'source', 'the dataset')} declares splits {sorted(rows)} but no "
                         f"{' or '.join(missing)} rows; evaluation needs both (pass (train, test) splits, or read the "
                         "manifest without split= to keep every row)")
    return {role: rows[role] for role in ROLES if role in rows}
