"""Resampling to 16 kHz (or another rate) with soxr at "HQ" quality, announcing lost high-frequency content."""

from __future__ import annotations

import numpy as np
import soxr
import torch

from .arrays import SAMPLE_RATE, check_rate, to_float_audio
from .high_frequency import HighFrequencyMeter, warn_high_frequency

__all__ = ["resample"]


def resample(waveform, orig_sr: int, target_sr: int = SAMPLE_RATE, *, warn: bool = True,
             source: str | None = None) -> torch.Tensor:
    """``[..., samples]`` at ``orig_sr`` -> float32 ``[..., resampled_length(samples, orig_sr, target_sr)]`` (soxr HQ).

    Identity (no copy) when the rates are equal. ``warn`` announces lost high-frequency content
    (see the module docstring); ``source`` names the audio in that warning.
    """
    wave = to_float_audio(waveform, name=source or "waveform")
    orig_sr, target_sr = check_rate(orig_sr, "orig_sr"), check_rate(target_sr, "target_sr")
    if orig_sr == target_sr:
        return wave
    if warn:
        _warn_high_frequency(wave, orig_sr, target_sr, source)
    lead, n = wave.shape[:-1], wave.shape[-1]
    frames = np.ascontiguousarray(wave.detach().cpu().reshape(-1, n).T.numpy())  # soxr wants [samples, channels]
    out = soxr.resample(frames, orig_sr, target_sr, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, -1).to(wave.device)



def _warn_high_frequency(wave: torch.Tensor, orig_sr: int, target_sr: int, source: str | None) -> None:
    if orig_sr <= target_sr:
        return
    meter = HighFrequencyMeter(orig_sr, target_sr / 2)
    if wave.shape[-1] >= 2:
        meter.add(wave)
    warn_high_frequency(meter, orig_sr, target_sr, source)
