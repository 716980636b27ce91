"""The preprocessing contract the model carries: how raw audio becomes the encoder's input.

It belongs to the encoder (``AvexModel.preprocessing``); each published weights entry names one, and a probe's
provenance records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..audio.arrays import SAMPLE_RATE, WINDOW_S

__all__ = ["Preprocessing"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw audio becomes the encoder's input; part of the contract a probe is bound to."""

    sample_rate: int = SAMPLE_RATE
    fbank_mean: float = 15.41663
    fbank_std: float = 6.55582
    input_scale: float = 2.0**15  # float audio in [-1, 1] is scaled to 16-bit range before the filterbank
    clip_input: bool = False  # clamp audio to [-1, 1] first (the NatureLM-audio encoder was trained so)
    window_s: float = WINDOW_S  # the clip length the model was trained on

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
