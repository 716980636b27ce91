"""The high-frequency meter: how much of a signal's energy lies above the Nyquist frequency of the rate it is
resampled to (8 kHz for 16 kHz), and the one warning when that share is large.

Downsampling audio whose energy above the new Nyquist exceeds ``HIGH_FREQUENCY_FRACTION`` (10%: ordinary broadband
noise in a 44.1 kHz bird recording stays under it, ultrasonic calls do not) emits one
``HighFrequencyContentWarning`` per source and message: it is issued from a fixed line of this module, so Python's
default warning filter shows each distinct message (it names the path) once per process. Silence it with
``warnings.filterwarnings("ignore", category=HighFrequencyContentWarning)``. The share is measured over the whole
signal, also when a file is streamed (``HighFrequencyMeter``).

A share means something only when there is energy to share: the warning also needs the energy above the Nyquist
to be at least ``SILENCE_DB`` (-60 dB) relative to full scale, the level below which a signal counts as silent.
Codec noise in a silent MP3, or a few samples of near silence, can hold most of a near-zero energy up there
without anything audible being lost.
"""

from __future__ import annotations

import math
import warnings

import torch

from .arrays import check_rate, to_float_audio
from .quality import SILENCE_DB

__all__ = ["HIGH_FREQUENCY_FRACTION", "HighFrequencyContentWarning", "HighFrequencyMeter",
           "high_frequency_energy_fraction", "warn_high_frequency"]

HIGH_FREQUENCY_FRACTION = 0.10  # energy fraction above the target Nyquist that triggers the warning
_FFT_FRAME = 8192  # frame length of the high-frequency energy estimate (bounded memory for long audio)


class HighFrequencyContentWarning(UserWarning):
    """Resampling to 16 kHz removed a noticeable share of the signal's energy (above 8 kHz)."""


class HighFrequencyMeter:
    """Share of spectral energy above ``cutoff_hz``, accumulated over consecutive chunks ``[rows, n]`` of one
    signal in constant memory (the frames left over between chunks are carried over).

    Frames of 8192 samples, Hann windowed, per row; a signal shorter than a frame is one frame, and a tail
    shorter than a frame is left out. ``add`` every chunk in order, then read :attr:`fraction`: it equals
    :func:`high_frequency_energy_fraction` of the whole signal; :attr:`above_db` is the level of the energy above
    the cutoff.
    """

    def __init__(self, sample_rate: int, cutoff_hz: float = 8000.0) -> None:
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self.cutoff_hz = float(cutoff_hz)
        self.rest: torch.Tensor | None = None  # [rows, < frame] samples not yet in a frame
        self.total = self.above = 0.0
        self.squares, self.samples = 0.0, 0  # of the measured frames: their mean square is the signal's power
        self.frames = 0

    @property
    def active(self) -> bool:
        return self.sample_rate / 2 > self.cutoff_hz

    def add(self, chunk) -> None:
        if not self.active:
            return
        chunk = to_float_audio(chunk, name="chunk").detach().cpu()
        if chunk.shape[-1] == 0:
            return
        chunk = chunk.reshape(-1, chunk.shape[-1])
        if self.rest is not None and self.rest.shape[1]:  # complete the carried-over frame first
            need = _FFT_FRAME - self.rest.shape[1]
            head, chunk = torch.cat([self.rest, chunk[:, :need]], dim=1), chunk[:, need:]
            if head.shape[1] < _FFT_FRAME:
                self.rest = head
                return
            self._measure(head)
        whole = chunk.shape[1] // _FFT_FRAME * _FFT_FRAME
        if whole:
            self._measure(chunk[:, :whole].reshape(-1, _FFT_FRAME))
        self.rest = chunk[:, whole:].clone()

    def _measure(self, frames: torch.Tensor) -> None:
        length = frames.shape[1]
        window = torch.hann_window(length, periodic=False, dtype=torch.float64).float()
        high = torch.fft.rfftfreq(length, 1.0 / self.sample_rate, dtype=torch.float64) > self.cutoff_hz
        for part in frames.split(256):  # at most 256 frames (2M samples) transformed at once
            # float32 transforms (5x faster than float64, the same fraction to 6 digits), float64 sums
            power = torch.view_as_real(torch.fft.rfft(part.float() * window)).square().sum(-1)
            self.total += float(power.sum(dtype=torch.float64))
            self.above += float(power[:, high].sum(dtype=torch.float64))
            self.squares += float(part.double().square().sum())
        self.frames += frames.shape[0]
        self.samples += frames.numel()

    @property
    def fraction(self) -> float:
        if self.frames == 0 and self.rest is not None and self.rest.shape[1] >= 2:  # shorter than one frame
            self._measure(self.rest)
            self.rest = self.rest[:, :0]
        return self.above / self.total if self.total > 0 else 0.0

    @property
    def above_db(self) -> float:
        """The power above the cutoff in dB relative to full scale (1.0): ``fraction`` of the measured signal's
        mean square; -inf when there is none."""
        power = self.fraction * self.squares / self.samples if self.samples else 0.0
        return 10 * math.log10(power) if power > 0 else -math.inf


def high_frequency_energy_fraction(waveform, sample_rate: int, cutoff_hz: float = 8000.0) -> float:
    """Fraction of spectral energy above ``cutoff_hz`` (0 when the signal cannot hold any: sr/2 <= cutoff).

    Estimated from Hann-windowed frames of 8192 samples (a shorter input is one frame; a tail shorter
    than a frame is left out), so memory stays bounded for long audio. ``waveform`` is ``[..., samples]``.
    """
    wave = to_float_audio(waveform, name="waveform")
    meter = HighFrequencyMeter(sample_rate, cutoff_hz)
    if wave.shape[-1] >= 2:
        meter.add(wave)
    return meter.fraction


def warn_high_frequency(meter: HighFrequencyMeter, orig_sr: int, target_sr: int, source: str | None) -> None:
    """The one HighFrequencyContentWarning, when the ``meter`` (cutoff ``target_sr / 2``) found more than
    ``HIGH_FREQUENCY_FRACTION`` of the energy above the cutoff, and that energy at ``SILENCE_DB`` or above."""
    fraction = meter.fraction
    if fraction > HIGH_FREQUENCY_FRACTION and meter.above_db >= SILENCE_DB:
        # Fixed location on purpose: the default filter then shows each message (it names the source) once.
        warnings.warn(
            f"{source or 'audio'}: resampling from {orig_sr} Hz to {target_sr} Hz removes everything above "
            f"{target_sr / 2000:g} kHz, which held {fraction:.1%} of the signal energy. The model hears only "
            f"0-{target_sr / 2000:g} kHz, so ultrasonic or high-pitched sounds will look like silence to it. "
            "If they matter, time-expand the recording (pass the array with a lower sample_rate, e.g. rate / 10) "
            "or use a model made for ultrasonic audio.", HighFrequencyContentWarning, stacklevel=1)
