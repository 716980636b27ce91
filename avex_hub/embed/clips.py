"""What extraction reads: audio given directly (:class:`ClipList`: file paths, arrays, a ``[n, samples]`` tensor),
any input as a dataset with a ``collate``, and a collated batch's labels.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..audio.arrays import SAMPLE_RATE, WINDOW_S, to_float_audio
from ..audio.collate import collate_audio
from ..audio.decoding import load_audio
from ..audio.resampling import resample

__all__ = ["ClipList", "as_dataset", "batch_labels"]


class ClipList(torch.utils.data.Dataset):
    """Audio given directly: file paths, 1-D arrays/tensors (at ``sample_rate``), or a ``[n, samples]`` tensor.

    Files are decoded with :func:`avex_hub.audio.decoding.load_audio` (mono mix, 16 kHz) in ``__getitem__``, so
    DataLoader workers share the decoding. Clips longer than ``max_s`` seconds keep their first ``max_s`` (None: all).
    """

    collate = staticmethod(collate_audio)
    target_rate = SAMPLE_RATE  # what every clip is resampled to; extract_embeddings checks it against the model

    def __init__(self, clips, *, sample_rate: int = SAMPLE_RATE, max_s: float | None = WINDOW_S, labels=None) -> None:
        if isinstance(clips, (torch.Tensor, np.ndarray)) and clips.ndim == 1:
            clips = [clips]
        self.clips = list(clips)
        if not self.clips:
            raise ValueError("no audio given: expected at least one file path or array")
        self.sample_rate, self.max_s = int(sample_rate), max_s
        self.labels_ = None if labels is None else list(labels)
        if self.labels_ is not None and len(self.labels_) != len(self.clips):
            raise ValueError(f"{len(self.labels_)} labels for {len(self.clips)} clips")
        self.paths = [str(c) if isinstance(c, (str, os.PathLike)) else None for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        if isinstance(clip, (str, os.PathLike)):
            wave = load_audio(clip, end_s=self.max_s).waveform[0]
        else:
            wave = to_float_audio(clip, name=f"clip {index}")
            if wave.dim() != 1:
                raise ValueError(f"clip {index}: expected mono audio [samples], got shape {tuple(wave.shape)}")
            wave = resample(wave, self.sample_rate, SAMPLE_RATE, source=f"clip {index}")
            if self.max_s is not None:
                wave = wave[: int(round(self.max_s * SAMPLE_RATE))]
        if wave.numel() == 0:
            raise ValueError(f"clip {index} is empty; expected at least one sample")
        out = {"audio": wave, "index": index}
        if self.labels_ is not None:
            out["label"] = torch.as_tensor(self.labels_[index])
        return out


def as_dataset(data, sample_rate: int | None):
    """``data`` as a dataset with a ``collate``: a dataset that has one as it is, else a :class:`ClipList` (arrays at
    ``sample_rate``, default 16 kHz; the rows of a ``[n, samples]`` tensor are kept whole)."""
    if hasattr(data, "collate") and hasattr(data, "__getitem__"):
        return data
    if isinstance(data, torch.Tensor) and data.dim() == 2:
        return ClipList(list(data), sample_rate=sample_rate or SAMPLE_RATE, max_s=None)
    if isinstance(data, (list, tuple, torch.Tensor, np.ndarray)):
        return ClipList(data, sample_rate=sample_rate or SAMPLE_RATE)
    raise TypeError(f"expected an AudioDataset, a list of file paths or arrays, or a [n, samples] tensor; "
                    f"got {type(data).__name__}")


def batch_labels(batch: dict) -> torch.Tensor | None:
    """A collated batch's multi-hot ``target`` as float ``[B, K]``, else its ``label`` ids as long ``[B]``, else None."""
    if "target" in batch:
        return torch.as_tensor(batch["target"]).float()
    if "label" in batch:
        value = batch["label"]
        return torch.stack([torch.as_tensor(v) for v in value]).long() if isinstance(value, list) \
            else torch.as_tensor(value).long()
    return None
