"""WAV files in the layouts field recorders write, byte by byte (the monitoring tests read their start times).

* AudioMoth (AudioMoth-Firmware-Basic's header): ``RIFF``/``WAVE``, ``fmt `` (16 bytes, PCM), ``LIST`` of type
  ``INFO`` holding ``ICMT`` (the comment, a fixed 384 bytes, NUL padded) and ``IART`` ("AudioMoth <serial>", 32
  bytes), then ``data``.
* GUANO (Wildlife Acoustics Song Meters and others): ``fmt ``, ``data`` and a ``guan`` chunk of UTF-8
  ``key: value`` lines, by default after the audio (where streaming recorders put it), padded to an even length.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def riff(chunks: list[bytes]) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm16(seconds: float, rate: int, freq: float = 1000.0) -> tuple[bytes, bytes]:
    """``(fmt body, data body)`` of a mono 16-bit tone."""
    t = np.arange(round(seconds * rate)) / rate
    data = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()
    return struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16), data


def audiomoth_wav(path: Path, comment: str, *, serial: str | None = "24F319055FDF1C41", seconds: float = 1.0,
                  rate: int = 48000) -> Path:
    """``serial=None``: no ``IART`` entry (a file whose header was rewritten by another tool)."""
    fmt, data = pcm16(seconds, rate)
    icmt = comment.encode("ascii").ljust(384, b"\0")
    iart = b"" if serial is None else chunk(b"IART", f"AudioMoth {serial}".encode("ascii").ljust(32, b"\0"))
    info = chunk(b"LIST", b"INFO" + chunk(b"ICMT", icmt) + iart)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(riff([chunk(b"fmt ", fmt), info, chunk(b"data", data)]))
    return path


def guano_wav(path: Path, fields: dict[str, str], *, seconds: float = 1.0, rate: int = 24000,
              before_audio: bool = False) -> Path:
    fmt, data = pcm16(seconds, rate)
    text = "\n".join(f"{k}: {v}" for k, v in {"GUANO|Version": "1.0", **fields}.items()).encode("utf-8")
    guan = chunk(b"guan", text + (b" " if len(text) % 2 else b""))
    chunks = [chunk(b"fmt ", fmt), guan, chunk(b"data", data)] if before_audio else \
        [chunk(b"fmt ", fmt), chunk(b"data", data), guan]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(riff(chunks))
    return path


def plain_wav(path: Path, *, seconds: float = 1.0, rate: int = 16000, freq: float = 1000.0) -> Path:
    fmt, data = pcm16(seconds, rate, freq)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(riff([chunk(b"fmt ", fmt), chunk(b"data", data)]))
    return path
