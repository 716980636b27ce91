"""Sliding windows over audio files of any length (streamed) and over arrays, on the 16 kHz timeline.

Window k covers samples [k * hop, k * hop + window) of the 16 kHz signal; times are seconds of the
original file. Windows continue until one reaches the end, so no sample is lost (hop <= window is
required); the last is zero padded with its mask and kept however short (flagged too_short).
Order: time-major, then channel. ``stream_windows`` holds one block in memory, whatever the length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soxr
import torch

from .audio import (
    MIN_SAMPLES, SAMPLE_RATE, AudioDecodeError, ChannelMode, QualityFlags, _channel_rows, _check_rate, _open, _read,
    _take_rows, _warn_high_frequency, quality_flags, resample, to_float_audio,
)

__all__ = ["Window", "window_params", "stream_windows", "windows_from_array", "iter_array_windows",
           "default_batch_size"]


def default_batch_size(device: torch.device) -> int:
    """Windows per batch: 8 on CPU, 64 on CUDA (a starting point: `benchmarks/throughput.py --device cuda
    --batch-sizes 16,32,64,128` measures the batch that saturates a given GPU)."""
    return 64 if device.type == "cuda" else 8


@dataclass
class Window:
    audio: torch.Tensor  # float32 [window_samples], zero padded at the end when partial
    padding_mask: torch.Tensor  # bool [window_samples], True where audio is padding
    path: str | None
    channel: int | None  # source channel, None for the mono mix
    start_s: float  # on the original file's timeline
    end_s: float  # end of the real audio, not of the padding
    flags: QualityFlags  # of the real (unpadded) audio
    index: int = 0  # position in time: window k starts at k * hop



def window_params(window_s: float, hop_s: float | None, sample_rate: int) -> tuple[int, int]:
    """``(window, hop)`` in samples at ``sample_rate``, checked: finite, window at least the model's
    minimum input, 0 < hop <= window (a longer hop would skip audio). ``hop_s=None`` means hop = window."""
    hop_s = window_s if hop_s is None else hop_s
    if not (math.isfinite(window_s) and math.isfinite(hop_s)):
        raise ValueError(f"window_s and hop_s must be finite seconds, got {window_s!r}, {hop_s!r}")
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    if window * SAMPLE_RATE < MIN_SAMPLES * sample_rate:
        raise ValueError(f"window_s={window_s} is shorter than the model's minimum input of "
                         f"{MIN_SAMPLES / SAMPLE_RATE} s; use a longer window")
    if not 0 < hop <= window:
        raise ValueError(f"hop_s={hop_s} must be in (0, window_s={window_s}]: a longer hop would skip audio")
    return window, hop


class _Windower:
    """Cuts audio arriving in chunks ``[rows, n]`` into windows: time-major, then by row.

    Window k covers samples [k * hop, k * hop + window). Windows continue until one reaches the end
    of the audio, so every sample is covered; the last window is zero padded (with its mask) and is
    kept however little real audio it holds (flagged too_short below MIN_SAMPLES). Only the samples
    from the next window's start onwards are buffered.
    """

    def __init__(self, rows: list[int | None], sample_rate: int, window: int, hop: int, path: str | None):
        self.rows, self.sample_rate, self.window, self.hop, self.path = rows, sample_rate, window, hop, path
        self.buffer = np.zeros((len(rows), 0), np.float32)  # [rows, buffered], starting at sample buffer_start
        self.buffer_start = self.total = self.k = 0

    def _emit(self, end: int) -> Iterator[Window]:
        start = self.k * self.hop
        for row, channel in enumerate(self.rows):
            real = self.buffer[row, start - self.buffer_start: end - self.buffer_start]
            audio = np.zeros(self.window, np.float32)
            audio[: real.shape[0]] = real
            yield Window(audio=torch.from_numpy(audio), padding_mask=torch.arange(self.window) >= real.shape[0],
                         path=self.path, channel=channel, start_s=start / self.sample_rate,
                         end_s=end / self.sample_rate, flags=quality_flags(real, self.sample_rate), index=self.k)
        self.k += 1
        drop = min(self.k * self.hop, self.total) - self.buffer_start
        self.buffer, self.buffer_start = self.buffer[:, drop:], self.buffer_start + drop

    def push(self, chunk: np.ndarray) -> Iterator[Window]:
        """Add ``[rows, n]`` samples; yield every window now complete."""
        self.buffer = np.concatenate([self.buffer, chunk], axis=1)
        self.total += chunk.shape[1]
        while self.k * self.hop + self.window <= self.total:
            yield from self._emit(self.k * self.hop + self.window)

    def finish(self) -> Iterator[Window]:
        """The audio has ended: yield the partial windows still needed to cover its last samples."""
        while self.k * self.hop < self.total and (self.k == 0 or (self.k - 1) * self.hop + self.window < self.total):
            yield from self._emit(self.total)


def windows_from_array(waveform, sample_rate: int, *, window_s: float = 10.0, hop_s: float | None = None,
                       channels: ChannelMode = "mix", path: str | None = None) -> list[Window]:
    """Windows of in-memory audio ``[samples]`` or ``[channels, samples]`` at ``sample_rate``, at 16 kHz.

    Same windows, order and rules as ``stream_windows``; ``path`` only labels the windows.
    """
    wave = to_float_audio(waveform, name=path or "waveform").detach().cpu()
    wave = wave[None] if wave.dim() == 1 else wave
    if wave.dim() != 2 or 0 in wave.shape:
        raise ValueError(f"expected waveform [samples] or [channels, samples] with samples, got {tuple(wave.shape)}")
    window, hop = window_params(window_s, hop_s, SAMPLE_RATE)
    rows = _channel_rows(channels, wave.shape[0])
    out = resample(_take_rows(wave, rows), _check_rate(sample_rate, "sample_rate"), SAMPLE_RATE, source=path)
    windower = _Windower(rows, SAMPLE_RATE, window, hop, path)
    return [*windower.push(out.numpy()), *windower.finish()]


def stream_windows(path, *, window_s: float = 10.0, hop_s: float | None = None, channels: ChannelMode = "mix",
                   sample_rate: int = SAMPLE_RATE, block_s: float = 60.0) -> Iterator[Window]:
    """Windows of an audio file of any length, read ``block_s`` seconds at a time and resampled as a stream.

    Peak memory depends on ``block_s`` and ``window_s``, not on the file's length. Windows come in time
    order; with ``channels="all"`` each time position yields one window per channel (time-major).
    Arguments and the file header are checked now; decoding happens as the iterator is consumed.
    """
    sample_rate = _check_rate(sample_rate, "sample_rate")
    window, hop = window_params(window_s, hop_s, sample_rate)
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be positive seconds, got {block_s!r}")
    f, name = _open(path)
    with f:  # fail now, not at the first next(), for bad files and channels
        rows, src = _channel_rows(channels, f.channels, name), f.samplerate
        if f.frames == 0:
            raise AudioDecodeError(f"{name}: contains no audio frames; re-export it")

    def blocks() -> Iterator[tuple[np.ndarray, bool]]:
        step = max(1, round(block_s * src))
        with _open(name)[0] as f:
            while True:
                data = _read(f, step, name)  # [n <= step, channels]; short only at the end
                yield data.T, data.shape[0] < step

    return _windows_of_blocks(blocks(), rows, src, sample_rate, window, hop, name)


def iter_array_windows(waveform, sample_rate: int, *, window_s: float = 10.0, hop_s: float | None = None,
                       channels: ChannelMode = "mix", block_s: float = 60.0, name: str | None = None
                       ) -> Iterator[Window]:
    """Windows of in-memory audio ``[samples]`` or ``[channels, samples]`` at ``sample_rate``, at 16 kHz,
    made as :func:`stream_windows` makes them from a file: converted, mixed and resampled ``block_s``
    seconds at a time, so memory beyond the array itself is one block, whatever its length.

    ``name`` only labels the windows and messages. Arguments are checked now.
    """
    if not isinstance(waveform, (torch.Tensor, np.ndarray)):
        waveform = np.asarray(waveform)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu()
    shape = tuple(waveform.shape)
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"expected audio [samples] or [channels, samples] with samples, got {shape}")
    src = _check_rate(sample_rate, "sample_rate")
    window, hop = window_params(window_s, hop_s, SAMPLE_RATE)
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be positive seconds, got {block_s!r}")
    wave = waveform[None] if len(shape) == 1 else waveform  # a view
    rows = _channel_rows(channels, wave.shape[0])
    step, total = max(1, round(block_s * src)), wave.shape[1]
    blocks = ((wave[:, i: i + step], i + step >= total) for i in range(0, total, step))
    return _windows_of_blocks(blocks, rows, src, SAMPLE_RATE, window, hop, name)


def _windows_of_blocks(blocks: Iterator[tuple], rows: list[int | None], src: int, sample_rate: int, window: int,
                       hop: int, name: str | None) -> Iterator[Window]:
    """Windows of audio arriving as ``(block [channels, n] at src, is_last)``: rows selected, resampled as a stream."""
    # One stream for all rows: soxr resamples each channel on its own, as soxr.resample does.
    stream = soxr.ResampleStream(src, sample_rate, len(rows), dtype="float32", quality="HQ") \
        if src != sample_rate else None
    windower = _Windower(rows, sample_rate, window, hop, name)
    first = True
    for block, last in blocks:
        chunk = _take_rows(to_float_audio(block, name=name or "audio"), rows)  # [rows, n] at the source rate
        if stream is not None:
            if first:  # judge lost high-frequency content on the first block
                _warn_high_frequency(chunk, src, sample_rate, name)
            chunk = torch.from_numpy(stream.resample_chunk(np.ascontiguousarray(chunk.T), last=last).T)
        first = False
        yield from windower.push(chunk.numpy())
        if last:
            break
    if windower.total == 0:
        raise AudioDecodeError(f"{name}: no audio frames could be decoded; the file is probably truncated")
    yield from windower.finish()
