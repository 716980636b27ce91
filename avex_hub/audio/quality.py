"""Quality flags of audio as the model hears it (after resampling): clipped, silent, too short, truncated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .arrays import MIN_SAMPLES, SAMPLE_RATE, check_rate, resampled_length, to_float_audio

__all__ = ["CLIP_LEVEL", "CLIP_FRACTION", "SILENCE_DB", "FLAG_NAMES", "QualityFlags", "AudioQualityWarning",
           "quality_flags"]

CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample ...
CLIP_FRACTION = 0.001  # ... and clipped audio has at least this fraction (0.1%, and at least one) of them
SILENCE_DB = -60.0  # RMS below this (dB relative to full scale 1.0), or all zeros, is silent
FLAG_NAMES = ("clipped", "silent", "too_short", "truncated")  # the flags as batches and every output store them


class AudioQualityWarning(UserWarning):
    """Audio that is scored although it is clipped or silent (see ``QualityFlags``)."""



@dataclass(frozen=True)
class QualityFlags:
    clipped: bool  # >= CLIP_FRACTION of samples (and at least one) at |x| >= CLIP_LEVEL
    silent: bool  # RMS below SILENCE_DB, or no samples
    too_short: bool  # fewer than MIN_SAMPLES samples once at 16 kHz
    peak: float = math.nan  # max |x|
    rms_db: float = math.nan  # 20 log10(RMS), -inf for digital silence
    truncated: bool = False  # the file decodes fewer frames than its header states (a cut-short file)

    @property
    def ok(self) -> bool:
        return not (self.clipped or self.silent or self.too_short or self.truncated)



def quality_flags(waveform, sample_rate: int = SAMPLE_RATE) -> QualityFlags:
    """Clipping, silence and length flags for one row ``[samples]`` at ``sample_rate``."""
    wave = to_float_audio(waveform, name="waveform")
    wave = wave[0] if wave.dim() == 2 and wave.shape[0] == 1 else wave
    if wave.dim() != 1:
        raise ValueError(f"expected one row of samples [samples], got {tuple(wave.shape)}")
    n = wave.numel()
    too_short = resampled_length(n, check_rate(sample_rate, "sample_rate")) < MIN_SAMPLES
    if n == 0:
        return QualityFlags(clipped=False, silent=True, too_short=True, peak=0.0, rms_db=-math.inf)
    magnitude = wave.abs()
    clipped = int((magnitude >= CLIP_LEVEL).sum()) >= max(1.0, CLIP_FRACTION * n)
    rms = float(torch.linalg.vector_norm(wave)) / math.sqrt(n)
    rms_db = 20 * math.log10(rms) if rms > 0 else -math.inf
    return QualityFlags(clipped=clipped, silent=rms_db < SILENCE_DB, too_short=too_short,
                        peak=float(magnitude.max()), rms_db=rms_db)

