"""The audio input contract: files and arrays in, 16 kHz float32 tensors ``[rows, samples]`` out.

One implementation shared by ``AvexModel.predict``, the CLI and the dataset classes.

* ``load_audio`` reads a file (or a time range of it), picks channels and resamples to 16 kHz.
* ``avex_hub.audio.windows``: ``stream_windows`` cuts a file of any length into fixed windows holding one
  block in memory; ``windows_from_array`` cuts in-memory audio through the same code. It builds on the file
  and channel pieces here (``open_audio``, ``read_frames``, ``channel_rows``, ``take_rows``); this module
  does not import it (imports run one way).
* soundfile (libsndfile) is imported when a file is first opened, so tensor-in users of the model do not
  need it.
* ``to_float_audio``, ``select_channels``, ``resample``, ``pad_or_crop`` and ``collate_audio``
  are the pieces, usable on their own.

Conventions:
* Integer PCM becomes float by the WAV full-scale rule, so it lands in [-1, 1):
  int16 / 32768, int32 / 2**31 (24-bit audio read as int32 is left-aligned), int8 / 128,
  uint8 (x - 128) / 128. int64 and other integer types have no standard scale and are refused.
* Resampling uses soxr at "HQ" quality. Downsampling audio whose energy above the new Nyquist
  (8 kHz for 16 kHz) exceeds ``HIGH_FREQUENCY_FRACTION`` (10%: ordinary
  broadband noise in a 44.1 kHz bird recording stays under it, ultrasonic calls do not) emits one
  ``HighFrequencyContentWarning`` per source and message: it is issued from a fixed line of this
  module, so Python's default warning filter shows each distinct message (it names the path) once
  per process. Silence it with ``warnings.filterwarnings("ignore", category=HighFrequencyContentWarning)``.
  The share is measured over the whole signal, also when a file is streamed (``HighFrequencyMeter``).
* Quality flags (``QualityFlags``) describe the audio as returned (after resampling); ``truncated`` marks a
  file that decodes fewer frames than its header states (``stated_frames``).
* ``find_audio`` is the one folder walk (links followed, unreadable folders reported, each file once).
* Windows: window k covers [k * hop, k * hop + window) on the 16 kHz timeline (seconds of the original
  file); they continue until one reaches the end, so no sample is lost (hop <= window is required). The last
  is zero padded with its mask and kept however short (flagged too_short). Order: time-major, then channel.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

import numpy as np
import soxr
import torch

if TYPE_CHECKING:  # annotations only; the import itself happens when a file is opened
    import soundfile as sf

__all__ = [
    "SAMPLE_RATE", "WINDOW_S", "MIN_SAMPLES", "MIX_CHANNEL", "AUDIO_EXTENSIONS", "CLIP_LEVEL", "CLIP_FRACTION",
    "SILENCE_DB",
    "HIGH_FREQUENCY_FRACTION",
    "AudioDecodeError", "AudioQualityWarning", "HighFrequencyContentWarning", "AudioInfo", "Audio", "QualityFlags",
    "ChannelMode", "AudioSearch", "find_audio", "audio_info", "stated_frames", "load_audio", "select_channels",
    "resample", "resampled_length", "high_frequency_energy_fraction", "HighFrequencyMeter", "warn_high_frequency",
    "to_float_audio", "quality_flags", "pad_or_crop", "collate_audio", "channel_rows", "take_rows", "check_rate",
    "open_audio", "read_frames",
]

SAMPLE_RATE = 16_000  # the audio contract's rate; the model's (Preprocessing.sample_rate) reads it
WINDOW_S = 10.0  # the clip length the model was trained on (Preprocessing.window_s reads it); for code without a model
MIN_SAMPLES = 400 + 15 * 160  # 16 filterbank frames = one patch row (0.175 s); the model's shortest input
MIX_CHANNEL = -1  # the mono mix's channel value in arrays, dataset items and every output format (a Window's is None)
# File name endings taken as audio when folders are searched (CLI, class-folder datasets, noise folders); all are
# formats libsndfile decodes. A file named explicitly is read whatever its ending.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au", ".w64",
                    ".rf64", ".caf")
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample ...
CLIP_FRACTION = 0.001  # ... and clipped audio has at least this fraction (0.1%, and at least one) of them
SILENCE_DB = -60.0  # RMS below this (dB relative to full scale 1.0), or all zeros, is silent
HIGH_FREQUENCY_FRACTION = 0.10  # energy fraction above the target Nyquist that triggers the warning
_FFT_FRAME = 8192  # frame length of the high-frequency energy estimate (bounded memory for long audio)
_PCM = {"int16": (0.0, 32768.0), "int32": (0.0, 2.0**31), "int8": (0.0, 128.0), "uint8": (128.0, 128.0)}

ChannelMode = Union[Literal["mix", "all"], int]


class AudioDecodeError(ValueError):
    """A file that cannot be decoded: empty, corrupt, truncated or in an unsupported format."""


class HighFrequencyContentWarning(UserWarning):
    """Resampling to 16 kHz removed a noticeable share of the signal's energy (above 8 kHz)."""


class AudioQualityWarning(UserWarning):
    """Audio that is scored although it is clipped or silent (see ``QualityFlags``)."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str  # libsndfile's major format: "WAV", "FLAC", "OGG", "MP3", ...
    subtype: str = ""  # encoding: "PCM_16", "FLOAT", "VORBIS", "MPEG_LAYER_III", ...


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


@dataclass
class Audio:
    waveform: torch.Tensor  # float32 [rows, samples] at sample_rate; one row for "mix" or one channel
    sample_rate: int
    source_sample_rate: int
    channels: list[int | None]  # per row: source channel index, None for the mono mix
    path: str | None
    flags: list[QualityFlags]  # per row
    start_s: float = 0.0  # where waveform[:, 0] lies on the file's timeline

    @property
    def duration_s(self) -> float:
        return self.waveform.shape[-1] / self.sample_rate


# -- arrays ---------------------------------------------------------------------------------------
def to_float_audio(x, *, name: str = "audio") -> torch.Tensor:
    """numpy array, tensor or (nested) list -> float32 tensor of the same shape (may share memory).

    Float input is cast; int16/int32/int8/uint8 PCM is scaled to [-1, 1) (see module docstring).
    Raises TypeError for bool, complex, object, int64 and other types, ValueError for NaN/inf.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"expected {name} as a numpy array, torch tensor or list of samples, got "
                        f"{type(x).__name__} (use load_audio() for files)")
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if x.dtype.kind == "f" or x.dtype.name in _PCM:  # dtypes torch.from_numpy takes (after a float32 cast)
            x = x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x
            x = torch.from_numpy(x if x.flags.writeable and min(x.strides, default=0) >= 0 else x.copy())
    dtype = str(x.dtype).removeprefix("torch.")
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        t = x.to(torch.float32)
    elif isinstance(x, torch.Tensor) and dtype in _PCM:
        offset, scale = _PCM[dtype]
        t = (x.to(torch.float32) - offset) / scale
    else:
        raise TypeError(
            f"expected {name} as float samples (or int16/int32/int8/uint8 PCM), got dtype {dtype}; "
            + ("integers without a standard PCM scale: divide by your full-scale value, e.g. x / 32768 for 16-bit"
               if dtype.startswith(("int", "uint")) else "pass real-valued samples in [-1, 1]"))
    if t.dim() == 0:
        raise ValueError(f"expected {name} as an array of samples, got a scalar")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = ~finite
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite samples of {t.numel()} (first at index {first}, shape "
            f"{tuple(t.shape)}); locate them with np.argwhere(~np.isfinite(x)), then repair (np.nan_to_num) or drop the clip")
    return t


def channel_rows(mode: ChannelMode, num_channels: int, where: str = "audio") -> list[int | None]:
    """Rows to produce for ``mode`` from ``num_channels`` source channels (None = mean of all)."""
    if isinstance(mode, str) and mode in ("mix", "all"):
        return [None] if mode == "mix" else list(range(num_channels))
    if isinstance(mode, (int, np.integer)) and not isinstance(mode, (bool, np.bool_)):
        if -num_channels <= mode < num_channels:
            return [int(mode) % num_channels]
        raise ValueError(f"channel {mode} requested but {where} has {num_channels} channel(s); "
                         f"use 0..{num_channels - 1}, 'mix' (mean) or 'all'")
    raise ValueError(f"channels must be 'mix', 'all' or a channel index, got {mode!r}")


def take_rows(wave: torch.Tensor, rows: list[int | None]) -> torch.Tensor:
    """[C, S] -> [len(rows), S]: the channel mean for [None], else the listed channels."""
    return wave.mean(dim=0, keepdim=True) if rows == [None] else wave[rows]


def select_channels(waveform, mode: ChannelMode = "mix") -> tuple[torch.Tensor, list[int | None]]:
    """``[channels, samples]`` -> (``[rows, samples]``, source channel per row; None for the mix)."""
    wave = to_float_audio(waveform, name="waveform")
    if wave.dim() != 2 or wave.shape[0] == 0:
        raise ValueError(f"expected waveform of shape [channels, samples], got {tuple(wave.shape)}; "
                         "for mono audio use x[None] (or x.unsqueeze(0))")
    rows = channel_rows(mode, wave.shape[0])
    return take_rows(wave, rows), rows


def check_rate(rate, name: str) -> int:
    """``rate`` as a positive int number of samples per second, or a ValueError naming ``name``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
            or not math.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise ValueError(f"{name} must be a positive whole number of Hz (e.g. 48000), got {rate!r}")
    return int(rate)


class HighFrequencyMeter:
    """Share of spectral energy above ``cutoff_hz``, accumulated over consecutive chunks ``[rows, n]`` of one
    signal in constant memory (the frames left over between chunks are carried over).

    Frames of 8192 samples, Hann windowed, per row; a signal shorter than a frame is one frame, and a tail
    shorter than a frame is left out. ``add`` every chunk in order, then read :attr:`fraction`: it equals
    :func:`high_frequency_energy_fraction` of the whole signal.
    """

    def __init__(self, sample_rate: int, cutoff_hz: float = 8000.0) -> None:
        self.sample_rate = check_rate(sample_rate, "sample_rate")
        self.cutoff_hz = float(cutoff_hz)
        self.rest: torch.Tensor | None = None  # [rows, < frame] samples not yet in a frame
        self.total = self.above = 0.0
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
        self.frames += frames.shape[0]

    @property
    def fraction(self) -> float:
        if self.frames == 0 and self.rest is not None and self.rest.shape[1] >= 2:  # shorter than one frame
            self._measure(self.rest)
            self.rest = self.rest[:, :0]
        return self.above / self.total if self.total > 0 else 0.0


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


def _warn_high_frequency(wave: torch.Tensor, orig_sr: int, target_sr: int, source: str | None) -> None:
    if orig_sr <= target_sr:
        return
    warn_high_frequency(high_frequency_energy_fraction(wave, orig_sr, target_sr / 2), orig_sr, target_sr, source)


def warn_high_frequency(fraction: float, orig_sr: int, target_sr: int, source: str | None) -> None:
    """The one HighFrequencyContentWarning, when ``fraction`` of the energy lies above ``target_sr / 2``."""
    if fraction > HIGH_FREQUENCY_FRACTION:
        # Fixed location on purpose: the default filter then shows each message (it names the source) once.
        warnings.warn(
            f"{source or 'audio'}: resampling from {orig_sr} Hz to {target_sr} Hz removes everything above "
            f"{target_sr / 2000:g} kHz, which held {fraction:.1%} of the signal energy. The model hears only "
            f"0-{target_sr / 2000:g} kHz, so ultrasonic or high-pitched sounds will look like silence to it. "
            "If they matter, time-expand the recording (pass the array with a lower sample_rate, e.g. rate / 10) "
            "or use a model made for ultrasonic audio.", HighFrequencyContentWarning, stacklevel=1)


def resampled_length(samples: int, orig_sr: int, target_sr: int = SAMPLE_RATE) -> int:
    """How many samples soxr makes of ``samples`` at ``orig_sr`` (whole or streamed): ``samples * target_sr /
    orig_sr`` rounded half up. Python's ``round`` rounds half to even and is one short at every exact half."""
    return (2 * samples * target_sr + orig_sr) // (2 * orig_sr)


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


# -- files ----------------------------------------------------------------------------------------
@dataclass
class AudioSearch:
    """What :func:`find_audio` found: audio files in order, and the folders it could not list (path -> why)."""

    files: list[str]
    failures: dict[str, str]
    hidden: int = 0  # hidden (``.name``) audio files and hidden folders left out


def find_audio(paths, *, extensions=AUDIO_EXTENSIONS, skip=()) -> AudioSearch:
    """Files named directly (any ending) plus files with an audio ending under folders: the one folder walk.

    Folders are searched recursively in sorted order (a folder's files, then its sub-folders), following
    symbolic links; a folder reached twice (a link loop, or two links to one folder) is walked once, by real
    path. Hidden files and folders (``.name``) are skipped, and so are the folders in ``skip`` (a run's own
    ``<out>.parts``). A folder that cannot be listed is not skipped in silence: it lands in ``failures``.
    A file named twice (relative and absolute, or through a link) is listed once, first spelling kept.
    Raises FileNotFoundError for a path that does not exist.
    """
    endings = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    skipped = {os.path.realpath(s) for s in skip}
    found: dict[str, str] = {}  # real path -> path as found
    failures: dict[str, str] = {}
    walked: set[str] = set()
    hidden = 0

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in walked or real in skipped:
            return
        walked.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            failures[folder] = f"{type(error).__name__}: cannot list this folder ({error.strerror or error})"
            return
        nonlocal hidden
        hidden += sum(e.name.startswith(".") and (_is_dir(e) or e.name.lower().endswith(endings)) for e in entries)
        entries = [e for e in entries if not e.name.startswith(".")]
        folders = [e.path for e in entries if _is_dir(e)]
        for e in entries:
            if e.path not in folders and e.name.lower().endswith(endings):
                found.setdefault(os.path.realpath(e.path), e.path)
        for sub in folders:
            walk(sub)

    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            walk(path)
        elif os.path.lexists(path):  # any file named directly; a dangling link fails (reported) when read
            found.setdefault(os.path.realpath(path), path)
        else:
            raise FileNotFoundError(f"input not found: {path} (working directory {os.getcwd()}); "
                                    "pass audio files or folders holding them")
    return AudioSearch(list(found.values()), failures, hidden)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False


def open_audio(path) -> tuple[sf.SoundFile, str]:
    """Open an audio file for reading, or raise FileNotFoundError / AudioDecodeError naming it."""
    import soundfile as sf  # here, not at import: the model (tensors in) must not need libsndfile

    name = os.fsdecode(os.fspath(path))
    if not os.path.exists(name):
        raise FileNotFoundError(errno.ENOENT, f"audio file not found (working directory {os.getcwd()})", name)
    if os.path.isdir(name):
        raise IsADirectoryError(errno.EISDIR, "expected an audio file, got a directory", name)
    if os.path.getsize(name) == 0:
        raise AudioDecodeError(f"{name}: the file is empty (0 bytes), probably an interrupted write or download; "
                               "re-export or re-download it")
    try:
        return sf.SoundFile(os.fsencode(name)), name  # bytes: soundfile cannot encode a non-UTF-8 name given as str
    except (sf.SoundFileError, RuntimeError) as e:
        cause = getattr(e, "error_string", None) or str(e)
        raise AudioDecodeError(
            f"{name}: cannot decode audio ({cause}). Expected WAV, FLAC, OGG (Vorbis/Opus), MP3 or another format "
            f"libsndfile {sf.__libsndfile_version__} reads. If it plays elsewhere, convert it (e.g. "
            "`ffmpeg -i in.m4a out.flac`); otherwise it is corrupt or truncated") from e


def read_frames(f: sf.SoundFile, frames: int, name: str) -> np.ndarray:
    """Up to ``frames`` frames from the current position -> float32 [frames_read, channels]."""
    import soundfile as sf

    try:
        return f.read(frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioDecodeError(f"{name}: decoding failed at frame {f.tell()} ({e}); the file is probably "
                               "truncated or corrupt: re-export it or convert it with ffmpeg") from e


def stated_frames(f: sf.SoundFile, name: str) -> int:
    """The frames the container says it holds. libsndfile's ``frames`` already shrinks a cut-short WAV to the
    bytes present, so for RIFF/RF64 WAV the ``data`` chunk's stated size is read from the header (a streaming
    size of 0 or 0xFFFFFFFF states nothing); other formats (MP3's Xing/LAME header, FLAC, OGG) report theirs
    through ``frames``. A file that decodes fewer frames than this is truncated.
    """
    if f.format not in ("WAV", "WAVEX"):
        return f.frames
    try:
        with open(name, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return f.frames
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return f.frames
    offset, block_align, size = 12, 0, None
    while offset + 8 <= len(head):
        chunk, length = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "little")
        if chunk == b"fmt " and offset + 22 <= len(head):
            block_align = int.from_bytes(head[offset + 20:offset + 22], "little")
        if chunk == b"data":
            size = length
            break
        offset += 8 + length + (length & 1)
    if size in (None, 0, 0xFFFFFFFF) or block_align <= 0:
        return f.frames
    return max(f.frames, size // block_align)


def audio_info(path) -> AudioInfo:
    """Header facts of an audio file without decoding it."""
    f, name = open_audio(path)
    with f:
        return AudioInfo(path=name, sample_rate=f.samplerate, channels=f.channels, frames=f.frames,
                         duration_s=f.frames / f.samplerate, format=f.format, subtype=f.subtype)


def load_audio(path, *, target_rate: int = SAMPLE_RATE, channels: ChannelMode = "mix",
               start_s: float | None = None, end_s: float | None = None) -> Audio:
    """Read ``path`` (only the ``[start_s, end_s)`` range, if given), select channels, resample to ``target_rate``.

    ``end_s`` past the end of the file reads to the end; ``start_s`` at or past it is an error.
    """
    target_rate = check_rate(target_rate, "target_rate")
    f, name = open_audio(path)
    with f:
        rows = channel_rows(channels, f.channels, name)
        src, duration = f.samplerate, f.frames / f.samplerate
        if f.frames == 0:
            raise AudioDecodeError(f"{name}: contains no audio frames; re-export it")
        for value, label in ((start_s, "start_s"), (end_s, "end_s")):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a time in seconds >= 0, got {value!r}")
        first = 0 if start_s is None else round(start_s * src)
        last = f.frames if end_s is None else min(f.frames, round(end_s * src))
        stated = stated_frames(f, name)
        wanted = stated if end_s is None else min(stated, round(end_s * src))  # what the header promises
        if start_s is not None and start_s >= duration:
            raise ValueError(f"start_s={start_s} is at or past the end of {name} ({duration:.3f} s long)")
        if last <= first:
            raise ValueError(f"end_s={end_s} must be after start_s={start_s or 0} (file {name}, {duration:.3f} s)")
        if first:
            f.seek(first)
        data = read_frames(f, last - first, name)  # [frames, channels]
    if data.shape[0] == 0:  # the header promised frames that do not decode
        raise AudioDecodeError(f"{name}: no audio could be decoded from {first / src:.3f} s on, although the header "
                               f"says {duration:.3f} s; the file is probably truncated: re-export it")
    wave = take_rows(to_float_audio(data.T, name=name), rows)  # [rows, frames] at the source rate
    wave = resample(wave, src, target_rate, source=name)
    truncated = first + data.shape[0] < wanted
    flags = [dataclasses.replace(quality_flags(row, target_rate), truncated=truncated) for row in wave]
    return Audio(waveform=wave, sample_rate=target_rate, source_sample_rate=src, channels=rows, path=name,
                 flags=flags, start_s=first / src)


# -- batches --------------------------------------------------------------------------------------
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
