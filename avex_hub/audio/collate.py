"""Collation: clips of any length into one padded batch with its mask, and one clip padded or cropped to a length."""

from __future__ import annotations

import numpy as np
import torch

from .arrays import to_float_audio

__all__ = ["pad_or_crop", "collate_audio"]


def pad_or_crop(waveform, num_samples: int, *, random: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., samples]`` -> (float32 ``[..., num_samples]``, bool mask of the same shape, True = padding).

    Longer audio is cropped from the start, or at a uniformly random offset with ``random=True``;
    shorter audio is zero padded at the end.
    """
    wave = to_float_audio(waveform, name="waveform")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    n = wave.shape[-1]
    offset = int(torch.randint(0, n - num_samples + 1, (1,), generator=generator)) if random and n > num_samples else 0
    audio = torch.nn.functional.pad(wave[..., offset: offset + num_samples], (0, max(0, num_samples - n)))
    return audio, (torch.arange(num_samples, device=audio.device) >= n).expand(audio.shape).clone()


def collate_audio(batch: list[dict]) -> dict:
    """Items with ``"audio"`` [samples] (and optional bool ``"padding_mask"``) -> a padded batch.

    Returns ``"audio"`` float32 [B, longest] and ``"padding_mask"`` bool [B, longest] (True = padding);
    other keys are stacked when every value is a tensor, else returned as lists.
    """
    if not batch:
        raise ValueError("collate_audio got an empty batch")
    keys = set(batch[0]) - {"padding_mask"}  # a mask may come with some items only
    for i, item in enumerate(batch):
        if not isinstance(item, dict) or "audio" not in item or set(item) - {"padding_mask"} != keys:
            found = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(f"batch item {i}: expected a dict with the keys {sorted(keys | {'audio'})}, got {found}")
    audios = [to_float_audio(item["audio"], name=f"batch item {i} audio") for i, item in enumerate(batch)]
    for i, a in enumerate(audios):
        if a.dim() != 1:
            raise ValueError(f"batch item {i}: expected audio [samples], got {tuple(a.shape)}; select a channel first")
    longest = max(a.shape[0] for a in audios)
    audio = torch.zeros(len(batch), longest)
    mask = torch.ones(len(batch), longest, dtype=torch.bool)
    for i, (a, item) in enumerate(zip(audios, batch)):
        audio[i, : a.shape[0]] = a
        own = item.get("padding_mask")
        own = torch.zeros(a.shape, dtype=torch.bool) if own is None else torch.as_tensor(own)
        if own.dtype != torch.bool or own.shape != a.shape:
            raise ValueError(f"batch item {i}: padding_mask must be bool of shape {tuple(a.shape)}, "
                             f"got {own.dtype} {tuple(own.shape)}")
        mask[i, : a.shape[0]] = own
    out: dict = {"audio": audio, "padding_mask": mask}
    for key in sorted(keys - {"audio"}, key=str):
        values = [item[key] for item in batch]
        if all(isinstance(v, torch.Tensor) for v in values):
            try:
                out[key] = torch.stack(values)
            except RuntimeError as e:
                raise ValueError(f"cannot stack {key!r}: shapes {[tuple(v.shape) for v in values]}") from e
        else:
            out[key] = values
    return out
