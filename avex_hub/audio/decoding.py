"""Decoding: files in (any format libsndfile reads, or a time range of one), 16 kHz float32 ``[rows, samples]`` out.

``load_audio`` reads a file, picks channels and resamples; ``open_audio`` and ``read_frames`` are the pieces
``avex_hub.audio.windows.stream_windows`` streams with. soundfile (libsndfile) is imported when a file is first
opened, so tensor-in users of the model do not need it. Quality flags (``QualityFlags``) describe the audio as
returned (after resampling); ``truncated`` marks a file that decodes fewer frames than its header states
(:func:`avex_hub.audio.wav_header.stated_frames`).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .arrays import SAMPLE_RATE, ChannelMode, channel_rows, check_rate, take_rows, to_float_audio
from .quality import QualityFlags, quality_flags
from .resampling import resample
from .wav_header import stated_frames
from ..storage.locations import is_url, local_path
from ..storage.objects import RangeReader, object_size, raise_source_error

if TYPE_CHECKING:  # annotations only; the import itself happens when a file is opened
    import soundfile as sf

__all__ = ["AudioDecodeError", "AudioInfo", "Audio", "open_audio", "read_frames", "audio_info", "load_audio"]


class AudioDecodeError(ValueError):
    """A file that cannot be decoded: empty, corrupt, truncated or in an unsupported format."""



@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str  # libsndfile's major format: "WAV", "FLAC", "OGG", "MP3", ...
    subtype: str = ""  # encoding: "PCM_16", "FLOAT", "VORBIS", "MPEG_LAYER_III", ...



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



def open_audio(path) -> tuple[sf.SoundFile, str]:
    """Open an audio file for reading, or raise FileNotFoundError / AudioDecodeError naming it."""
    import soundfile as sf  # here, not at import: the model (tensors in) must not need libsndfile

    name = local_path(os.fsdecode(os.fspath(path)))  # a file:// URL is a local path
    if is_url(name):  # s3://, gs://, https://: read in ranges
        return _open_object(name), name
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
        raise _undecodable(name, e) from e


def _undecodable(name: str, error: Exception) -> AudioDecodeError:
    import soundfile as sf

    cause = getattr(error, "error_string", None) or str(error)
    return AudioDecodeError(
        f"{name}: cannot decode audio ({cause}). Expected WAV, FLAC, OGG (Vorbis/Opus), MP3 or another format "
        f"libsndfile {sf.__libsndfile_version__} reads. If it plays elsewhere, convert it (e.g. "
        "`ffmpeg -i in.m4a out.flac`); otherwise it is corrupt or truncated")


def _open_object(url: str) -> sf.SoundFile:
    """An object in a store, decoded as it is read in ranges (:class:`avex_hub.storage.objects.RangeReader`); a
    store error during a read surfaces in :func:`read_frames`, not as a short file."""
    import soundfile as sf

    if object_size(url) == 0:
        raise AudioDecodeError(f"{url}: the object is empty (0 bytes), probably an interrupted upload; upload it again")
    reader = RangeReader(url)
    try:
        f = sf.SoundFile(reader)
    except (sf.SoundFileError, RuntimeError) as e:
        raise_source_error(reader)  # the store's reason, where there is one
        raise _undecodable(url, e) from e
    f.source = reader  # read_frames asks it for a store error
    return f


def read_frames(f: sf.SoundFile, frames: int, name: str) -> np.ndarray:
    """Up to ``frames`` frames from the current position -> float32 [frames_read, channels]."""
    import soundfile as sf

    try:
        data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as e:
        raise_source_error(getattr(f, "source", None))
        raise AudioDecodeError(f"{name}: decoding failed at frame {f.tell()} ({e}); the file is probably "
                               "truncated or corrupt: re-export it or convert it with ffmpeg") from e
    raise_source_error(getattr(f, "source", None))  # an object that went away reads as a short file to libsndfile
    return data



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

