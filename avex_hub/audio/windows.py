"""Sliding windows over audio files of any length (streamed) and over arrays, on the 16 kHz timeline.

Window k covers samples [k * hop, k * hop + window) of the 16 kHz signal; times are seconds of the
original file. Windows continue until one reaches the end, so no sample is lost (hop <= window is
required); the last is zero padded with its mask and kept however short (flagged too_short).
:func:`window_starts` states this rule once; every windowing path (streams, arrays, ``window_dataset``) asks it.
Order: time-major, then channel. ``stream_windows`` holds one block in memory, whatever the length.

A recording no longer than one window is one window of its own length, not padded (:func:`window_length`; below
the model's shortest input, ``MIN_SAMPLES``, it is padded to that and masked). The model then sees what the
official library and ``model(clip)`` give it: only the clip. Padded to a full window with a mask, the patch where
the clip ends (part audio, part padding) would join the attention and the pooling, and the scores would move.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soxr
import torch

from .arrays import MIN_SAMPLES, SAMPLE_RATE, WINDOW_S, ChannelMode, channel_rows, check_rate, take_rows, to_float_audio
from .decoding import AudioDecodeError, open_audio, read_frames
from .high_frequency import HighFrequencyMeter, warn_high_frequency
from .quality import QualityFlags, quality_flags
from .wav_header import stated_frames

__all__ = ["Window", "WindowStream", "window_params", "window_starts", "window_length", "stream_windows",
           "windows_from_array", "iter_array_windows", "recording_windows"]


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
    file: int = 0  # position of its recording in the caller's list of inputs (``stream_windows(..., file=)``)



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


def window_starts(total: int, window: int, hop: int) -> range:
    """The first sample of every window over ``total`` samples, all in samples of one rate.

    Window k covers ``[k * hop, k * hop + window)``. Windows continue until one reaches the end, so every
    sample is covered and none starts after a window that already reached it: a window ending exactly at
    ``total`` is the last (``total=8000, window=4000, hop=4000`` gives 0, 4000), and a ragged end gets one more,
    shorter window (``total=9000`` gives 0, 4000, 8000; that last one holds 1000 real samples). An input no
    longer than one window, however short, gets one window starting at 0; an empty input (``total=0``) none.
    Callers pad a window that runs past ``total`` to :func:`window_length` and mark its padding.

    Raises ValueError unless ``total >= 0`` and ``0 < hop <= window`` (a longer hop would skip audio; convert
    seconds with :func:`window_params`, which checks them).
    """
    if total < 0 or not 0 < hop <= window:
        raise ValueError(f"window_starts needs total >= 0 and 0 < hop <= window samples, got total={total}, "
                         f"window={window}, hop={hop}; a longer hop would skip audio")
    if total == 0:
        return range(0)
    # k > 0 starts a window only while window k - 1 ends before total: (k - 1) * hop + window < total
    return range(0, max(total - window, 0) + hop, hop)


def window_length(total: int, window: int) -> int:
    """The samples every window of a recording of ``total`` samples holds: ``window``, or for a recording no longer
    than one window its own length (at least ``MIN_SAMPLES``, the model's shortest input, the rest padding)."""
    return window if total > window else max(total, MIN_SAMPLES)


class _Windower:
    """Cuts audio arriving in chunks ``[rows, n]`` into windows: time-major, then by row.

    The windows are those of :func:`window_starts` over the audio's final length: every full window as soon
    as its samples have arrived, the partial ones (zero padded with their mask, kept however little real
    audio they hold, flagged too_short below MIN_SAMPLES) once the audio has ended; a recording no longer than
    one window is one window of :func:`window_length`. Only the samples from the next window's start onwards
    are buffered.
    """

    def __init__(self, rows: list[int | None], sample_rate: int, window: int, hop: int, path: str | None,
                 file: int = 0):
        self.rows, self.sample_rate, self.window, self.hop, self.path = rows, sample_rate, window, hop, path
        self.file = file
        self.buffer = np.zeros((len(rows), 0), np.float32)  # [rows, buffered], starting at sample buffer_start
        self.buffer_start = self.total = self.k = 0
        self.truncated = False  # set once the source is known to end before its stated length

    def _emit(self, end: int) -> Iterator[Window]:
        start = self.k * self.hop
        length = window_length(self.total, self.window) if self.k == 0 else self.window
        for row, channel in enumerate(self.rows):
            real = self.buffer[row, start - self.buffer_start: end - self.buffer_start]
            audio = np.zeros(length, np.float32)
            audio[: real.shape[0]] = real
            yield Window(audio=torch.from_numpy(audio), padding_mask=torch.arange(length) >= real.shape[0],
                         path=self.path, channel=channel, start_s=start / self.sample_rate,
                         end_s=end / self.sample_rate, index=self.k, file=self.file,
                         flags=dataclasses.replace(quality_flags(real, self.sample_rate), truncated=self.truncated))
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
        for _ in range(self.k, len(window_starts(self.total, self.window, self.hop))):
            yield from self._emit(self.total)


def windows_from_array(waveform, sample_rate: int, *, window_s: float = WINDOW_S, hop_s: float | None = None,
                       channels: ChannelMode = "mix", path: str | None = None) -> list[Window]:
    """Windows of in-memory audio ``[samples]`` or ``[channels, samples]`` at ``sample_rate``, at 16 kHz.

    Same windows, order, rules and values as ``stream_windows`` (one implementation:
    :func:`iter_array_windows`, collected); ``path`` only labels the windows.
    """
    return list(iter_array_windows(waveform, sample_rate, window_s=window_s, hop_s=hop_s, channels=channels,
                                   name=path))


class WindowStream:
    """The windows of one file, as an iterator; once it is exhausted, ``truncated`` says whether the file decoded
    fewer frames than its header states (see :func:`avex_hub.audio.wav_header.stated_frames`), ``decoded_s`` and
    ``stated_s`` give both lengths, and ``high_frequency_fraction`` the share of energy above 8 kHz over the
    whole file (measured at the source rate, before resampling)."""

    def __init__(self, windows: Iterator[Window]) -> None:
        self._windows = windows
        self.truncated = False
        self.decoded_s = self.stated_s = 0.0
        self.high_frequency_fraction = 0.0

    def __iter__(self) -> "WindowStream":
        return self

    def __next__(self) -> Window:
        return next(self._windows)


def stream_windows(path, *, window_s: float = WINDOW_S, hop_s: float | None = None, channels: ChannelMode = "mix",
                   target_rate: int = SAMPLE_RATE, block_s: float = 60.0, file: int = 0) -> WindowStream:
    """Windows of an audio file of any length, read ``block_s`` seconds at a time and resampled as a stream.

    Peak memory depends on ``block_s`` and ``window_s``, not on the file's length. Windows come in time
    order; with ``channels="all"`` each time position yields one window per channel (time-major).
    Arguments and the file header are checked now; decoding happens as the iterator is consumed.
    Energy above the new Nyquist is measured over the whole file as it streams (one
    ``HighFrequencyContentWarning`` at its end, as :func:`avex_hub.audio.decoding.load_audio` gives). A file that
    decodes fewer frames than its header states is truncated: the windows from its last block on are flagged
    ``truncated`` and so is the returned stream (``stream.truncated``), for callers that flag the whole file.
    ``file`` numbers the windows (``Window.file``: the file's position in the caller's list of inputs).
    """
    target_rate = check_rate(target_rate, "target_rate")
    window, hop = window_params(window_s, hop_s, target_rate)
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be positive seconds, got {block_s!r}")
    f, name = open_audio(path)
    with f:  # fail now, not at the first next(), for bad files and channels
        rows, src = channel_rows(channels, f.channels, name), f.samplerate
        if f.frames == 0:
            raise AudioDecodeError(f"{name}: contains no audio frames; re-export it")
        stated = stated_frames(f, name)

    result = WindowStream(iter(()))

    def blocks() -> Iterator[tuple[np.ndarray, bool]]:
        step, decoded = max(1, round(block_s * src)), 0
        with open_audio(name)[0] as f:
            while True:
                data = read_frames(f, step, name)  # [n <= step, channels]; short only at the end
                last = data.shape[0] < step
                decoded += data.shape[0]
                if last:  # known only now: the file ends before the length its header states
                    result.truncated = decoded < stated
                    result.decoded_s, result.stated_s = decoded / src, stated / src
                yield data.T, last

    result._windows = _windows_of_blocks(blocks(), rows, src, target_rate, window, hop, name, result, file)
    return result


def iter_array_windows(waveform, sample_rate: int, *, window_s: float = WINDOW_S, hop_s: float | None = None,
                       channels: ChannelMode = "mix", block_s: float = 60.0, name: str | None = None,
                       file: int = 0) -> Iterator[Window]:
    """Windows of in-memory audio ``[samples]`` or ``[channels, samples]`` at ``sample_rate``, at 16 kHz,
    made as :func:`stream_windows` makes them from a file: converted, mixed and resampled ``block_s``
    seconds at a time, so memory beyond the array itself is one block, whatever its length.

    ``name`` only labels the windows and messages, ``file`` numbers them (``Window.file``). Arguments are checked
    now.
    """
    if not isinstance(waveform, (torch.Tensor, np.ndarray)):
        waveform = np.asarray(waveform)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu()
    shape = tuple(waveform.shape)
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(f"expected audio [samples] or [channels, samples] with samples, got {shape}")
    if len(shape) == 2 and shape[0] > shape[1]:  # before any channel is read: no warnings per "channel" first
        raise ValueError(f"expected audio [channels, samples], got shape {shape}: {shape[0]} channels of {shape[1]} "
                         f"samples each. This looks like [samples, channels] (the layout soundfile.read returns); "
                         "pass the transpose (x.T)")
    src = check_rate(sample_rate, "sample_rate")
    window, hop = window_params(window_s, hop_s, SAMPLE_RATE)
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be positive seconds, got {block_s!r}")
    wave = waveform[None] if len(shape) == 1 else waveform  # a view
    rows = channel_rows(channels, wave.shape[0])
    step, total = max(1, round(block_s * src)), wave.shape[1]
    blocks = ((wave[:, i: i + step], i + step >= total) for i in range(0, total, step))
    return _windows_of_blocks(blocks, rows, src, SAMPLE_RATE, window, hop, name, file=file)


def recording_windows(audio, sample_rate: int | None = None, *, window_s: float = WINDOW_S,
                      hop_s: float | None = None, channels: ChannelMode = "mix") -> tuple[Iterator[Window], str]:
    """The windows of one recording, and the name messages give it: a file path (str or ``os.PathLike``,
    streamed by :func:`stream_windows`) or an array ``[samples]`` / ``[channels, samples]`` at ``sample_rate``
    (required for arrays; :func:`iter_array_windows`). Arguments are checked now."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected a file path (str or pathlib.Path) or an array of samples, got {len(audio)} bytes. "
                        "For a file's contents held in memory, decode them first: data, rate = "
                        "soundfile.read(io.BytesIO(raw)); for a file name given as bytes, pass os.fsdecode(name)")
    if isinstance(audio, str) or hasattr(audio, "__fspath__"):
        return stream_windows(audio, window_s=window_s, hop_s=hop_s, channels=channels), str(audio)
    if sample_rate is None:
        raise ValueError("predict() and embed() need sample_rate= for array input (for example sample_rate=48000); "
                         "a tensor at model.sample_rate without it is a batch")
    name = "the audio array"
    return iter_array_windows(audio, sample_rate, window_s=window_s, hop_s=hop_s, channels=channels, name=name), name


def _windows_of_blocks(blocks: Iterator[tuple], rows: list[int | None], src: int, sample_rate: int, window: int,
                       hop: int, name: str | None, result: WindowStream | None = None, file: int = 0
                       ) -> Iterator[Window]:
    """Windows of audio arriving as ``(block [channels, n] at src, is_last)``: rows selected, resampled as a stream.

    Energy above the new Nyquist is measured over every block (one warning at the end, and
    ``result.high_frequency_fraction``); ``result.truncated``, when the block source sets it before its last
    block, flags the windows from that block on.
    """
    # One stream for all rows: soxr resamples each channel on its own, as soxr.resample does.
    stream = soxr.ResampleStream(src, sample_rate, len(rows), dtype="float32", quality="HQ") \
        if src != sample_rate else None
    meter = HighFrequencyMeter(src, sample_rate / 2)
    windower = _Windower(rows, sample_rate, window, hop, name, file)
    for block, last in blocks:
        chunk = take_rows(to_float_audio(block, name=name or "audio"), rows)  # [rows, n] at the source rate
        if stream is not None:
            meter.add(chunk)
            chunk = torch.from_numpy(stream.resample_chunk(np.ascontiguousarray(chunk.T), last=last).T)
        if last and result is not None:
            windower.truncated = result.truncated
        yield from windower.push(chunk.numpy())
        if last:
            break
    if windower.total == 0:
        raise AudioDecodeError(f"{name}: no audio frames could be decoded; the file is probably truncated")
    if stream is not None:
        if result is not None:
            result.high_frequency_fraction = meter.fraction
        warn_high_frequency(meter, src, sample_rate, name)
    yield from windower.finish()
