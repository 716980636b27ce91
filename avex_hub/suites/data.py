"""What every benchmark reader returns: one data set's splits as audio datasets, with what was derived or skipped.

A reader raises ``FileNotFoundError`` (a file or folder of the published layout is not there; the message says
where it was looked for and how to get it) or ``ValueError`` (a file is there but does not read as the layout
says); the runner records either as "not run" for that set and goes on with the others. Files that are listed
but missing or unreadable are skipped, counted in ``SetData.failures`` and named in the run's failures file.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import torch

from ..audio.datasets import AudioDataset
from ..heads.targets import split_indices

__all__ = ["SetData", "ROLES", "label_text", "checked_dataset", "hold_out_val"]

ROLES = ("train", "val", "test")


@dataclass
class SetData:
    """One data set of a suite, ready to embed.

    ``splits``: ``train``/``val``/``test`` AudioDatasets (a retrieval-only suite may have only ``test``);
    ``multilabel``: multi-hot targets (detection, BirdSet) rather than one class per clip; ``control``: a
    non-animal control set (BEANS's ESC-50 and Speech Commands), left out of the animal-only aggregate;
    ``notes``: what was derived rather than read (e.g. a validation split held out of train); ``failures``:
    ``(path, reason)`` of every listed file that was skipped; ``source``: where the set was read from.
    """

    name: str
    splits: dict[str, AudioDataset]
    multilabel: bool
    source: str
    control: bool = False
    notes: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return next(iter(self.splits.values())).labels

    def sizes(self) -> dict[str, int]:
        return {role: len(data) for role, data in self.splits.items()}

    def audio_seconds(self) -> float:
        """Seconds of audio the encoder will see (every clip at its padded length)."""
        return float(sum(len(data) * (data.clip_s or 0.0) for data in self.splits.values()))


def label_text(value) -> str:
    """A label cell as text, stripped; a whole number written as a float (``3.0``: pandas writes an integer column
    with a gap that way) as the integer (``"3"``), so that labels compare as the lists write them."""
    text = str(value).strip()
    return text.split(".")[0] if re.fullmatch(r"-?\d+\.0+", text) else text


def checked_dataset(items, *, labels, clip_s: float, multilabel: bool, source: str
                    ) -> tuple[AudioDataset, list[tuple[str, str]]]:
    """An AudioDataset of ``items`` with the label order ``labels``, every file's header read once: files that are
    missing or cannot be read are left out and returned as ``(path, reason)`` (the warnings that announce them
    are folded into that list). ``ValueError`` when no item is left."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the skipped files are returned, and reported by the runner
        dataset = AudioDataset(items, label_map=list(labels), clip_s=clip_s, multilabel=multilabel,
                               on_error="skip", source=source)
        dataset.check(on_error="skip")
    return dataset, list(dataset.failures)


def hold_out_val(train: AudioDataset, fraction: float, seed: int) -> tuple[AudioDataset, AudioDataset]:
    """``(train, val)``: ``fraction`` of ``train`` held out, seeded (per class for single-label data, as
    :func:`avex_hub.heads.training.split_indices` draws it)."""
    keep, held = split_indices(torch.as_tensor(train.targets), fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise ValueError(f"cannot hold out {fraction:.0%} of {len(train)} train clips of {train.source} for "
                         "validation; the set needs a validation split")
    return train.subset(keep), train.subset(held)
