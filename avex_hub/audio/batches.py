"""Windows into batches: the window batch every path hands to a model, and the one function that makes them.

A :class:`WindowBatch` holds ``b`` windows of one length, stacked: ``audio`` float32 ``[b, S]`` and
``padding_mask`` bool ``[b, S]`` (True = padding), and per window ``file`` (the position of its recording in the
caller's list of inputs), ``channel`` (``MIX_CHANNEL``, -1, for the mono mix), ``start_s``/``end_s`` (seconds of
the recording; ``end_s`` ends the real audio, not the padding), ``index`` (its position in time within the
recording) and ``flags`` ``[b, 4]`` (``FLAG_NAMES``: clipped, silent, too_short, truncated). It is plain tensors,
so it crosses process boundaries (DataLoader workers, remote actors) as it is.

:func:`batch_windows` is the one place windows are stacked. Windows of different lengths never share a batch: a
recording no longer than one window is one window of its own length (see :mod:`avex_hub.audio.windows`), and
padding it to a neighbour's length would change its numbers. :func:`file_windows` streams a list of files into
windows and a :class:`FileEnd` per file (the end of its windows, or why it failed), which :func:`batch_windows`
passes on right after the batch holding the file's last window.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Iterator, Sequence

import torch

from .arrays import MIX_CHANNEL, WINDOW_S, ChannelMode
from .quality import FLAG_NAMES
from .windows import Window, stream_windows

__all__ = ["WindowBatch", "FileEnd", "batch_windows", "file_windows"]


@dataclass
class WindowBatch:
    """``b`` windows of one length, ready for a model; every field has ``b`` rows (see the module docstring)."""

    audio: torch.Tensor  # float32 [b, S]
    padding_mask: torch.Tensor  # bool [b, S], True = padding
    file: torch.Tensor  # int64 [b], position of the recording in the caller's inputs
    channel: torch.Tensor  # int32 [b], source channel, MIX_CHANNEL (-1) for the mono mix
    start_s: torch.Tensor  # float64 [b], seconds of the recording
    end_s: torch.Tensor  # float64 [b], end of the real audio
    index: torch.Tensor  # int64 [b], window k of its recording starts at k * hop
    flags: torch.Tensor  # bool [b, len(FLAG_NAMES)]

    def __len__(self) -> int:
        return self.audio.shape[0]

    def pin_memory(self) -> "WindowBatch":
        """Page-locked copies of the tensors (what a DataLoader with ``pin_memory=True`` asks of its items)."""
        return WindowBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


@dataclass(frozen=True)
class FileEnd:
    """Recording ``file`` has no windows left: all were handed out in earlier batches, or ``error`` says why it
    failed (windows of it already handed out are then to be dropped). ``truncated``: it decoded fewer frames than
    its header states (known only at its end)."""

    file: int
    error: str | None = None
    truncated: bool = False


def batch_windows(items: Iterable[Window | FileEnd], batch_size: int) -> Iterator[WindowBatch | FileEnd]:
    """Windows, in order, into batches of at most ``batch_size`` windows of one length; a :class:`FileEnd` comes
    out after the batch that holds the last window before it (at once when no window is waiting).

    A window of another length than those waiting closes the batch early, so every window is run at the length it
    was cut to. Raises ValueError for a ``batch_size`` that is not a positive int.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (windows per model call), got {batch_size!r}")
    waiting: list[Window] = []
    ends: list[FileEnd] = []
    for item in items:
        if isinstance(item, FileEnd):
            if waiting:
                ends.append(item)
            else:
                yield item
            continue
        if waiting and item.audio.shape[-1] != waiting[0].audio.shape[-1]:
            yield _stack(waiting)
            yield from ends
            waiting, ends = [], []
        waiting.append(item)
        if len(waiting) == batch_size:
            yield _stack(waiting)
            yield from ends
            waiting, ends = [], []
    if waiting:
        yield _stack(waiting)
    yield from ends


def _stack(windows: list[Window]) -> WindowBatch:
    """The one ``torch.stack`` over window audio."""
    return WindowBatch(
        audio=torch.stack([w.audio for w in windows]),
        padding_mask=torch.stack([w.padding_mask for w in windows]),
        file=torch.tensor([w.file for w in windows], dtype=torch.long),
        channel=torch.tensor([MIX_CHANNEL if w.channel is None else w.channel for w in windows], dtype=torch.int32),
        start_s=torch.tensor([w.start_s for w in windows], dtype=torch.float64),
        end_s=torch.tensor([w.end_s for w in windows], dtype=torch.float64),
        index=torch.tensor([w.index for w in windows], dtype=torch.long),
        flags=torch.tensor([[getattr(w.flags, name) for name in FLAG_NAMES] for w in windows], dtype=torch.bool),
    )


def file_windows(paths: Sequence[str], files: Iterable[int] | None = None, *, window_s: float = WINDOW_S,
                 hop_s: float | None = None, channels: ChannelMode = "mix",
                 block_s: float = 60.0) -> Iterator[Window | FileEnd]:
    """The windows of ``paths[i]`` for each ``i`` in ``files`` (default: all, in order), streamed
    (:func:`~avex_hub.audio.windows.stream_windows`), each file's followed by its :class:`FileEnd`. A file that
    cannot be read, or fails part-way, ends with a FileEnd carrying the error, and the next file goes on."""
    for index in range(len(paths)) if files is None else files:
        try:
            stream = stream_windows(paths[index], window_s=window_s, hop_s=hop_s, channels=channels, block_s=block_s,
                                    file=index)
            yield from stream
            yield FileEnd(index, None, stream.truncated)
        except Exception as error:  # noqa: BLE001 - any failure of one input is reported, the rest go on
            yield FileEnd(index, f"{type(error).__name__}: {error}")
