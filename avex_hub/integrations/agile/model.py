"""Our model behind hoplite's ``EmbeddingModel`` interface, for hoplite's own ``EmbedWorker`` and notebooks."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np
from perch_hoplite.zoo import zoo_interface

from ...audio.windows import Window
from .settings import archive_settings


@dataclasses.dataclass
class AvexEmbeddingModel(zoo_interface.EmbeddingModel):
    """Our model behind hoplite's ``EmbeddingModel``: ``embed(audio [samples] at 16 kHz)`` -> embeddings
    ``[windows, channels, dim]`` with our windowing (``window_size_s``/``hop_size_s``), layer, pooling, precision,
    runtime (:data:`avex_hub.encoder.runtimes.RUNTIMES`) and its ``threads``.

    Build it with :meth:`from_model` (or :meth:`from_config`, hoplite's way: ``model`` name, ``checkpoint``,
    ``layer``, ``pooling``, ``window_size_s``, ``hop_size_s``, ``precision``, ``device``, ``batch_size``, ``runtime``,
    ``threads``).
    """

    model: Any = None
    window_size_s: float | None = None  # None: the model's preprocessing.window_s
    hop_size_s: float | None = None
    layer: int = -1
    pooling: str = "mean"
    precision: str = "fp32"
    device: Any = None
    batch_size: int | None = None  # windows per model call; None: the device policy's (encoder.precision)
    runtime: str = "torch"
    threads: int | None = None  # the runtime's compute threads (onnxruntime, openvino); None: theirs

    def __post_init__(self) -> None:
        from ...encoder.pipeline import Embeddings
        from ...encoder.precision import batch_size_for, device_for
        from ...encoder.runtimes import window_model

        if self.model is None:
            raise ValueError("AvexEmbeddingModel needs model=<an AvexModel>; use AvexEmbeddingModel.from_model(model)")
        if self.sample_rate != self.model.sample_rate:
            raise ValueError(f"sample_rate={self.sample_rate} but {self.model.name} takes {self.model.sample_rate} Hz; "
                             "hoplite resamples to the model's rate, so pass the model's")
        if self.window_size_s is None:
            self.window_size_s = float(self.model.preprocessing.window_s)
        self.hop_size_s = float(self.window_size_s if self.hop_size_s is None else self.hop_size_s)
        self.settings = archive_settings(self.model, layer=self.layer, pooling=self.pooling,
                                         window_s=self.window_size_s, hop_s=self.hop_size_s, precision=self.precision,
                                         runtime=self.runtime)
        device = device_for(self.model, self.device) if self.runtime == "torch" else self.device
        self._run = window_model(self.model, Embeddings(tuple(self.settings["layers"]), self.pooling),
                                 runtime=self.runtime, precision=self.precision, device=device, threads=self.threads)
        self._device = self._run.device
        self.batch_size = batch_size_for(self._device, self.batch_size)

    @classmethod
    def from_model(cls, model, **kwargs) -> "AvexEmbeddingModel":
        return cls(sample_rate=model.sample_rate, model=model, **kwargs)

    @classmethod
    def from_config(cls, model_config) -> "AvexEmbeddingModel":
        from ...hub.loading import build_model

        config = dict(model_config)
        model = build_model(config.pop("model", "esp_aves2_sl_beats_all"), checkpoint=config.pop("checkpoint", None))
        config.setdefault("device", "auto")  # the model is built here, on no device yet: as the command line does
        return cls.from_model(model, **config)

    def embed(self, audio_array: np.ndarray) -> zoo_interface.InferenceOutputs:
        """``audio_array`` ``[samples]`` (or ``[channels, samples]``) at ``sample_rate`` -> ``[windows, channels, dim]``."""
        from ...audio.windows import iter_array_windows

        audio = _checked(np.asarray(audio_array, np.float32), self.sample_rate)
        vectors = self.vectors(iter_array_windows(audio, self.sample_rate, window_s=self.window_size_s,
                                                  hop_s=self.hop_size_s, channels="all" if audio.ndim == 2 else "mix"))
        channels = 1 if audio.ndim == 1 else audio.shape[0]
        return zoo_interface.InferenceOutputs(embeddings=vectors.reshape(-1, channels, vectors.shape[-1]))

    def batch_embed(self, audio_batch: np.ndarray) -> zoo_interface.InferenceOutputs:
        return zoo_interface.batch_embed_from_embed_fn(self.embed, audio_batch)

    def vectors(self, windows: Iterable[Window]) -> np.ndarray:
        """Embeddings ``[windows, dim]`` (float32) of ``windows``, in their order: the recording pipeline's batches
        (:func:`~avex_hub.audio.batches.batch_windows`, ``batch_size`` each) run through the model."""
        from ...audio.batches import batch_windows
        from ...encoder.pipeline import run_batches

        done = run_batches(self._run, batch_windows(windows, self.batch_size))
        return np.concatenate([item.outputs["embeddings"][:, 0] for item in done])


def _checked(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """hoplite's ``embed`` input, refused as ``predict`` refuses: another rank, ``[samples, channels]`` (with a
    hint to transpose), fewer samples than one patch of the model."""
    from ...encoder.model import MIN_SAMPLES

    if audio.ndim not in (1, 2):
        raise ValueError(f"audio_array must be [samples] or [channels, samples], got shape {audio.shape}")
    if audio.ndim == 2 and audio.shape[0] > audio.shape[1]:
        raise ValueError(f"audio_array of shape {audio.shape} looks like [samples, channels] ({audio.shape[1]} "
                         f"channels of {audio.shape[0]} samples); hoplite's embed takes [channels, samples]: pass "
                         "audio_array.T")
    samples = audio.shape[-1]
    if samples < MIN_SAMPLES:
        raise ValueError(f"audio of {samples} samples ({samples / sample_rate:.3f} s at {sample_rate} Hz) is shorter "
                         f"than the {MIN_SAMPLES} samples ({MIN_SAMPLES / sample_rate:.3f} s) of one 16-frame patch "
                         "of the model; pad it with zeros or use longer clips")
    return audio
