"""BEANS-Zero (Hugging Face ``EarthSpeciesProject/BEANS-Zero``; its sources under their own licences, the
dataset's terms accepted on its page) as held-out probe sets, the sources the tutorials use.

BEANS-Zero is one ``test`` split of Parquet shards (``shard*.parquet``) whose rows hold the audio, its sample rate
(JSON ``metadata``), the label (``output``) and the source (``dataset_name``). It has no train split, so each source
is split as the tutorials split it (:func:`avex_hub.tutorial.fetch_beans_zero`: per label, seeded, 70/15/15, the
one home of that reader) and probed like a BEANS classification set. ``root`` is a folder holding the shards, or
``hf://datasets/EarthSpeciesProject/BEANS-Zero`` on a machine that reaches the Hub (after ``hf auth login``). The
card reports no BEANS-Zero number.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..audio.arrays import WINDOW_S
from ..audio.datasets import AudioDataset
from ..tutorial import fetch_beans_zero
from .data import ROLES, SetData, checked_dataset

__all__ = ["BEANS_ZERO_SETS", "read_beans_zero"]

BEANS_ZERO_SETS = ("watkins", "humbugdb")  # the sources the tutorials score (notebooks 02 and 04)


def read_beans_zero(root: str | os.PathLike, name: str, *, work: str | os.PathLike, seed: int = 0,
                    clip_s: float = WINDOW_S, progress: bool = False) -> SetData:
    """The BEANS-Zero source ``name`` (a ``dataset_name``) from the shards in ``root``, written once as WAV files
    with a split manifest under ``work``, as train/val/test AudioDatasets of ``clip_s`` clips (default the model's
    window, as the tutorials cut them)."""
    source = str(root) if "://" in str(root) else str(Path(root).expanduser())
    manifest = fetch_beans_zero(name, Path(work) / "beans-zero" / name, source=source, seed=seed, progress=progress)
    rows = AudioDataset.from_manifest(manifest, clip_s=clip_s)
    labels, splits, failures = rows.labels, {}, []
    for role in ROLES:
        items = [item for item in rows.items if item.extra.get("split") == role]
        if not items:
            raise ValueError(f"BEANS-Zero {name}: no {role} clips in the split drawn (a label needs three clips "
                             "to give one to each of train, val and test); probe a source with more clips per label")
        splits[role], skipped = checked_dataset(items, labels=labels, clip_s=clip_s, multilabel=False,
                                                source=f"BEANS-Zero {name} {role}")
        failures += skipped
    notes = [f"BEANS-Zero has one test split: train/val/test drawn per label with seed {seed} (70/15/15)"]
    return SetData(name, splits, False, source=source, notes=notes, failures=failures)
