"""Spectrogram images for review clips, written as PNG by a small writer of our own.

Why not matplotlib: the review command runs where the CLI runs (servers, clusters) and needs one picture per clip,
not a plotting library (tens of MB, a font cache built on first import); a PNG is a zlib stream of rows and a few
CRC-checked chunks, so the image is written with the standard library and numpy, byte-identical on every run.

The picture: time left to right, 0 Hz at the bottom to half the sample rate at the top (a 512-point STFT with a
Hann window), power in dB over the loudest 80 dB mapped to a dark-to-light colour scale; a short tick each kHz
on the left edge (longer each 5 kHz); dashed white lines at the given times (the scored window's start and end).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["spectrogram_db", "spectrogram_image", "write_png"]

N_FFT = 512
DYNAMIC_RANGE_DB = 80.0
_ANCHORS = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                    dtype=np.float64)  # dark to light, perceptually ordered


def _palette() -> np.ndarray:
    """256 RGB colours interpolated between the anchors: [256, 3] uint8."""
    x = np.linspace(0, len(_ANCHORS) - 1, 256)
    columns = [np.interp(x, np.arange(len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)]
    return np.stack(columns, 1).round().astype(np.uint8)


def spectrogram_db(audio: np.ndarray, *, width: int = 800) -> tuple[np.ndarray, int]:
    """``(power in dB [N_FFT // 2 + 1, frames], hop in samples)`` of mono ``audio``; about ``width`` frames."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    hop = max(1, -(-(x.size - N_FFT) // max(1, width - 1)))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::hop] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(power.T + 1e-12), hop  # power in dB


def spectrogram_image(audio: np.ndarray, sample_rate: int, *, marks_s=(), width: int = 800) -> np.ndarray:
    """The review picture of mono ``audio`` as RGB ``[height, width, 3]`` uint8 (see the module docstring)."""
    db, hop = spectrogram_db(audio, width=width)
    top = db.max()
    level = np.clip((db - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    image = _palette()[(level * 255).round().astype(np.int64)][::-1].copy()  # row 0 = the highest frequency
    height, columns = image.shape[:2]
    for khz in range(1, int(sample_rate / 2000) + 1):
        row = height - 1 - round(khz * 1000 / (sample_rate / 2) * (height - 1))
        if 0 <= row < height:
            image[row, : 12 if khz % 5 == 0 else 6] = 255
    for seconds in marks_s:
        column = round(seconds * sample_rate / hop)
        if 0 <= column < columns:
            image[(np.arange(height) // 4) % 2 == 0, column] = 255
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write RGB ``image`` [height, width, 3] uint8 as an 8-bit PNG (atomically)."""
    from ..embed.outputs import atomic_path

    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, channels = image.shape
    if channels != 3:
        raise ValueError(f"expected an RGB image [height, width, 3], got shape {image.shape}")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no filter, no interlace
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) \
        + _chunk(b"IEND", b"")
    with atomic_path(path, ".png") as tmp:
        tmp.write_bytes(data)

