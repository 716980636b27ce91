"""A batched, Kaldi-compatible log-mel filterbank in pure PyTorch.

It computes what Kaldi's ``compute-fbank-feats`` (and ``torchaudio.compliance.kaldi.fbank``)
computes with the settings BEATs was trained with: 25 ms povey windows every 10 ms, ``snip_edges``,
DC removal, pre-emphasis 0.97, a 512-point power spectrum, 128 triangular mel bins from 20 Hz to
Nyquist and a natural log floored at float32 epsilon. Unlike the per-clip reference it takes a whole
batch ``[batch, samples]`` at once, runs on the input's device and always computes in float32, even
inside an autocast region (log-mel energies in bf16 lose the precision the encoder was trained on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.arrays import SAMPLE_RATE

__all__ = ["FbankConfig", "KaldiFbank", "mel_filterbank", "num_frames"]


@dataclass(frozen=True)
class FbankConfig:
    """The filterbank settings; the defaults are the ones every esp-aves2 BEATs model uses."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means "Nyquist plus this value", as in Kaldi
    window_exponent: float = 0.85  # the povey window is a Hann window to this power

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)  # 400 samples

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)  # 160 samples

    @property
    def n_fft(self) -> int:
        return 1 << (self.window_size - 1).bit_length()  # next power of two: 512


def num_frames(num_samples: int, config: FbankConfig = FbankConfig()) -> int:
    """Frames that ``snip_edges`` framing yields for ``num_samples`` samples (0 if too short)."""
    if num_samples < config.window_size:
        return 0
    return 1 + (num_samples - config.window_size) // config.window_shift


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log(1.0 + freq / 700.0)


def mel_filterbank(config: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Triangular mel weights ``[num_mel_bins, n_fft // 2 + 1]`` exactly as Kaldi lays them out.

    The last (Nyquist) column is zero, as in Kaldi, which builds its bins over ``n_fft / 2`` points.
    """
    nyquist = 0.5 * config.sample_rate
    high = config.high_freq if config.high_freq > 0 else nyquist + config.high_freq
    if not 0.0 <= config.low_freq < high <= nyquist:
        raise ValueError(
            f"mel range must satisfy 0 <= low_freq < high_freq <= {nyquist} Hz; "
            f"got low_freq={config.low_freq}, high_freq={high}"
        )
    n_bins = config.n_fft // 2
    mel_low, mel_high = _mel(config.low_freq), _mel(high)
    delta = (mel_high - mel_low) / (config.num_mel_bins + 1)
    index = torch.arange(config.num_mel_bins, dtype=torch.float32).unsqueeze(1)  # [mels, 1]
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    fft_mel = _mel(config.sample_rate / config.n_fft * torch.arange(n_bins, dtype=torch.float32))
    up = (fft_mel - left) / (center - left)  # [mels, n_bins]
    down = (right - fft_mel) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(weights, (0, 1))  # [mels, n_bins + 1]


class KaldiFbank(nn.Module):
    """``[batch, samples]`` float audio -> ``[batch, frames, num_mel_bins]`` log-mel energies.

    The module holds its window and mel matrix as non-persistent buffers, so they follow
    ``.to(device)`` but never appear in (or are required from) a state dict.
    """

    def __init__(self, config: FbankConfig = FbankConfig()) -> None:
        super().__init__()
        self.config = config
        window = torch.hann_window(config.window_size, periodic=False, dtype=torch.float64)
        self.register_buffer("window", window.pow(config.window_exponent).float(), persistent=False)
        self.register_buffer("mel_weights", mel_filterbank(config).T.contiguous(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected audio of shape [batch, samples], got {tuple(waveform.shape)}")
        cfg = self.config
        if waveform.shape[1] < cfg.window_size:
            raise ValueError(
                f"audio of {waveform.shape[1]} samples is shorter than one {cfg.window_size}-sample "
                "filterbank window; pad it or pass longer audio"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            frames = waveform.float().unfold(1, cfg.window_size, cfg.window_shift)  # [B, T, 400]
            frames = frames - frames.mean(dim=-1, keepdim=True)  # DC removal per frame
            # Pre-emphasis; the first sample of a frame is paired with itself, as in Kaldi.
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = (frames - cfg.preemphasis * previous) * self.window
            spectrum = torch.fft.rfft(frames, n=cfg.n_fft)  # [B, T, 257]
            power = spectrum.real.square() + spectrum.imag.square()
            energies = power @ self.mel_weights  # [B, T, mels]
            return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
