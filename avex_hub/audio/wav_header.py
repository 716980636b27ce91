"""The WAV header parser: the frame count a RIFF/RF64 ``data`` chunk states, to tell a cut-short file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..storage.objects import open_binary

if TYPE_CHECKING:  # annotations only
    import soundfile as sf

__all__ = ["stated_frames"]


def stated_frames(f: sf.SoundFile, name: str) -> int:
    """The frames the container says it holds. libsndfile's ``frames`` already shrinks a cut-short WAV to the
    bytes present, so for RIFF/RF64 WAV the ``data`` chunk's stated size is read from the header (a streaming
    size of 0 or 0xFFFFFFFF states nothing); other formats (MP3's Xing/LAME header, FLAC, OGG) report theirs
    through ``frames``. A file that decodes fewer frames than this is truncated.
    """
    if f.format not in ("WAV", "WAVEX"):
        return f.frames
    try:
        with open_binary(name, block_size=1 << 16) as handle:  # a URL: one ranged read of the header
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

