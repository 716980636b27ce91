"""Audio as arrays: the contract's facts (16 kHz, the 10 s window, the shortest input, the mix's channel value),
float32 tensors from arrays of any dtype, channel selection, sample-rate checks and lengths at another rate.

Integer PCM becomes float by the WAV full-scale rule, so it lands in [-1, 1): int16 / 32768, int32 / 2**31 (24-bit
audio read as int32 is left-aligned), int8 / 128, uint8 (x - 128) / 128. int64 and other integer types have no
standard scale and are refused.
"""

from __future__ import annotations

import math
from typing import Literal, Union

import numpy as np
import torch

__all__ = ["SAMPLE_RATE", "WINDOW_S", "MIN_SAMPLES", "MIX_CHANNEL", "ChannelMode", "to_float_audio", "channel_rows",
           "take_rows", "select_channels", "check_rate", "resampled_length"]

SAMPLE_RATE = 16_000  # the audio contract's rate; the model's (Preprocessing.sample_rate) reads it
WINDOW_S = 10.0  # the clip length the model was trained on (Preprocessing.window_s reads it); for code without a model
MIN_SAMPLES = 400 + 15 * 160  # 16 filterbank frames = one patch row (0.175 s); the model's shortest input
MIX_CHANNEL = -1  # the mono mix's channel value in arrays, dataset items and every output format (a Window's is None)
_PCM = {"int16": (0.0, 32768.0), "int32": (0.0, 2.0**31), "int8": (0.0, 128.0), "uint8": (128.0, 128.0)}

ChannelMode = Union[Literal["mix", "all"], int]


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



def resampled_length(samples: int, orig_sr: int, target_sr: int = SAMPLE_RATE) -> int:
    """How many samples soxr makes of ``samples`` at ``orig_sr`` (whole or streamed): ``samples * target_sr /
    orig_sr`` rounded half up. Python's ``round`` rounds half to even and is one short at every exact half."""
    return (2 * samples * target_sr + orig_sr) // (2 * orig_sr)

