"""The user-facing model: float audio in, species logits or frame features out.

``AvexModel`` wraps the filterbank, the BEATs encoder and the species head, and owns the label map.
It validates its input (so a wrong tensor fails with a message instead of a wrong answer) and
offers the operations people use by name: ``hidden_states``, ``embed``, ``predict``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .audio import (  # MIN_SAMPLES: 16 filterbank frames, one patch row, 0.175 s at 16 kHz
    MIN_SAMPLES, AudioQualityWarning, load_audio, quality_flags, resample, select_channels, to_float_audio,
)
from .beats import BEATs, BEATsConfig, EncoderOutput, frame_padding_mask
from .fbank import FbankConfig, KaldiFbank
from .labels import LabelMap
from .weights import Preprocessing

__all__ = ["AvexModel", "Prediction", "validate_audio", "MIN_SAMPLES"]


@dataclass(frozen=True)
class Prediction:
    """One label of a top-k answer; ``score`` is a sigmoid probability (the head is multi-label)."""

    label: str
    index: int
    score: float


def validate_audio(audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                   min_samples: int = MIN_SAMPLES) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check model input and return it as ``[batch, samples]`` float (and the mask likewise).

    Raises TypeError for non-tensors and non-float dtypes, ValueError for wrong rank, empty,
    too-short or non-finite audio and for a padding mask that does not match.
    """
    if not isinstance(audio, torch.Tensor):
        raise TypeError(
            f"expected audio as a torch.Tensor [batch, samples], got {type(audio).__name__}; "
            "use torch.as_tensor(x, dtype=torch.float32), or model.predict(x, sample_rate) for arrays and files"
        )
    if not audio.is_floating_point():
        hint = (" integer PCM: divide by 32768 (int16) or 2**31 (int32) to get floats in [-1, 1]"
                if audio.dtype in (torch.int16, torch.int32) else "")
        raise TypeError(f"expected float audio in [-1, 1], got dtype {audio.dtype};{hint or ' convert with .float()'}")
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
        padding_mask = padding_mask.unsqueeze(0) if padding_mask is not None else None
    if audio.dim() != 2:
        raise ValueError(
            f"expected audio of shape [batch, samples] or [samples], got {tuple(audio.shape)}; "
            "mix multi-channel audio to mono first (e.g. x.mean(dim=channel_axis))"
        )
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio is empty (shape {tuple(audio.shape)}); expected at least {min_samples} samples")
    if audio.shape[1] < min_samples:
        raise ValueError(
            f"audio of {audio.shape[1]} samples ({audio.shape[1] / 16000:.3f} s at 16 kHz) is shorter than "
            f"the {min_samples} samples ({min_samples / 16000:.3f} s) of one 16-frame patch; pad it with zeros "
            "and pass a padding_mask, or use longer clips"
        )
    finite = torch.isfinite(audio)
    if not bool(finite.all()):
        bad = (~finite).sum().item()
        rows = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"audio has {bad} NaN or infinite samples (batch rows {rows[:10]}); clean or drop them")
    if padding_mask is not None:
        if not isinstance(padding_mask, torch.Tensor) or padding_mask.dtype != torch.bool:
            raise TypeError("padding_mask must be a bool tensor with True where a sample is padding")
        if padding_mask.shape != audio.shape:
            raise ValueError(
                f"padding_mask shape {tuple(padding_mask.shape)} must equal audio shape {tuple(audio.shape)}"
            )
        empty = padding_mask.all(dim=1)
        if bool(empty.any()):
            raise ValueError(f"batch rows {empty.nonzero().flatten().tolist()} are all padding; drop them")
    return audio, padding_mask


class AvexModel(nn.Module):
    """An esp-aves2 BEATs model. ``model(audio)`` takes 16 kHz float audio ``[batch, samples]``.

    Returns logits ``[batch, labels]``, or frame features ``[batch, frames, 768]`` when
    ``return_features_only`` is set (always, for encoder-only weights).
    """

    def __init__(self, config: BEATsConfig, *, label_map: LabelMap | None = None,
                 preprocessing: Preprocessing = Preprocessing(), return_features_only: bool = False,
                 name: str = "beats", weights_sha256: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing
        self.name = name
        self.weights_sha256 = weights_sha256  # digest of the weights file this model was loaded from
        self.fbank = KaldiFbank(FbankConfig(sample_rate=preprocessing.sample_rate, num_mel_bins=config.num_mel_bins,
                                            frame_length_ms=config.frame_length, frame_shift_ms=config.frame_shift))
        self.backbone = BEATs(config)
        self.label_map = label_map
        self.classifier = nn.Linear(config.encoder_embed_dim, len(label_map)) if label_map is not None else None
        self.return_features_only = return_features_only or label_map is None
        self.eval()

    # -- properties people look for --------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The sample rate the model expects (16 kHz); ``predict`` resamples to it."""
        return self.preprocessing.sample_rate

    @property
    def num_layers(self) -> int:
        return self.config.encoder_layers

    @property
    def embedding_dim(self) -> int:
        return self.config.encoder_embed_dim

    @property
    def labels(self) -> tuple[str, ...]:
        """Species names in head order (empty for encoder-only weights)."""
        return self.label_map.names if self.label_map is not None else ()

    # -- the encoder -----------------------------------------------------------------------------
    def preprocess(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` float audio -> ``[B, frames, mels]`` normalised log-mel filterbank (fp32)."""
        p = self.preprocessing
        if p.clip_input:
            audio = audio.clamp(-1.0, 1.0)
        fbank = self.fbank(audio * p.input_scale)
        return (fbank - p.fbank_mean) / (2 * p.fbank_std)

    def encode(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
               output_hidden_states: bool = False, num_layers: int | None = None,
               hidden_layers: list[int] | None = None) -> EncoderOutput:
        """Run the encoder; returns features ``[B, N, C]``, the frame padding mask and hidden states
        (only ``hidden_layers`` of them when given, the others None)."""
        audio, padding_mask = validate_audio(audio, padding_mask)
        fbank = self.preprocess(audio)
        frame_mask = frame_padding_mask(padding_mask, fbank.shape[1]) if padding_mask is not None else None
        return self.backbone(fbank, frame_mask, output_hidden_states=output_hidden_states, num_layers=num_layers,
                             hidden_layers=hidden_layers)

    def hidden_states(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None,
                      layers: int | list[int] | str = "all") -> list[torch.Tensor]:
        """Frame features of the chosen layers, each ``[B, N, C]``.

        Layer 0 is the encoder input (after the position convolution), layer i (1..12) the output of
        transformer layer i; negative indices count from the end (-1 is the last layer).
        """
        indices = self.layer_indices(layers)
        out = self.encode(audio, padding_mask, output_hidden_states=True, num_layers=max(indices),
                          hidden_layers=indices)
        return [out.hidden_states[i] for i in indices]

    def layer_indices(self, layers: int | list[int] | str) -> list[int]:
        """Normalise ``"all"``, ``"last"``, an int or a list to indices in ``0..num_layers``."""
        n = self.num_layers
        if layers == "all":
            return list(range(n + 1))
        if layers == "last":
            return [n]
        items = [layers] if isinstance(layers, int) else list(layers)
        if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise TypeError(f"layers must be 'all', 'last', an int or a list of ints, got {layers!r}")
        resolved = [i + n + 1 if i < 0 else i for i in items]
        bad = [i for i, r in zip(items, resolved) if not 0 <= r <= n]
        if bad:
            raise ValueError(f"layer indices {bad} out of range; expected 0..{n} or -{n + 1}..-1")
        return resolved

    @staticmethod
    def pool(features: torch.Tensor, padding_mask: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, C]`` over frames that are not padding (``mean`` or ``max``)."""
        if pooling == "mean":
            if padding_mask is None:
                return features.mean(dim=1)
            valid = (~padding_mask).unsqueeze(-1).to(features.dtype)
            return (features * valid).sum(dim=1) / valid.sum(dim=1)
        if pooling == "max":
            if padding_mask is None:
                return features.amax(dim=1)
            return features.masked_fill(padding_mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")

    def embed(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
              layer: int = -1, pooling: str = "mean") -> torch.Tensor:
        """A pooled clip embedding ``[B, C]`` from one layer (default: the last)."""
        return self.pooled_layers(audio, padding_mask, layers=[layer], pooling=pooling)[:, 0]

    def pooled_layers(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                      layers: int | list[int] | str = "last", pooling: str = "mean") -> torch.Tensor:
        """``[B, L, C]``: each of ``layers`` (as in :meth:`hidden_states`) pooled over the frames that are not
        padding, all from one encoder pass that stops at the deepest layer asked for."""
        indices = self.layer_indices(layers)
        out = self.encode(audio, padding_mask, output_hidden_states=True, num_layers=max(indices),
                          hidden_layers=indices)
        return torch.stack([self.pool(out.hidden_states[i], out.padding_mask, pooling) for i in indices], dim=1)

    def forward(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.return_features_only:
            return self.encode(audio, padding_mask).features
        return self.logits(audio, padding_mask)

    def logits(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Species logits ``[B, labels]`` whatever ``return_features_only`` says."""
        if self.classifier is None:
            raise ValueError(f"{self.name} is an encoder without a species head; use embed() or a probe")
        out = self.encode(audio, padding_mask)
        return self.classifier(self.pool(out.features, out.padding_mask, "mean"))

    # -- convenience -----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, audio, sample_rate: int | None = None, *, top_k: int = 5,
                channels: str | int = "mix") -> list[Prediction] | list[list[Prediction]]:
        """Top-k species with sigmoid scores for a recording, or for each of a list of recordings.

        ``audio`` is a file path, a 1-D array (one mono recording) or a 2-D array ``[channels,
        samples]`` (one multi-channel recording) at ``sample_rate`` (required for arrays); it is
        resampled to 16 kHz. ``channels`` is the package-wide contract: ``"mix"`` (default) or a
        channel index give one answer; ``"all"`` gives one answer per channel. A list of recordings
        gives one answer per item. Clipped or silent audio is scored but warned about by name.
        """
        if self.classifier is None:
            raise ValueError(f"{self.name} has no species head to predict with; use embed() or a probe")
        if isinstance(audio, (list, tuple)):
            return [self.predict(item, sample_rate, top_k=top_k, channels=channels) for item in audio]
        rows = self._predict_input(audio, sample_rate, channels)
        device = next(self.parameters()).device
        scores = torch.sigmoid(self.logits(rows.to(device))).float().cpu()  # [rows, labels]
        values, indices = scores.topk(min(top_k, scores.shape[1]), dim=1)
        answers = [[Prediction(self.label_map.name(i), i, v) for v, i in zip(vs.tolist(), ix.tolist())]
                   for vs, ix in zip(values, indices)]
        return answers if channels == "all" else answers[0]

    def _predict_input(self, audio, sample_rate: int | None, channels) -> torch.Tensor:
        """Any accepted input -> ``[rows, samples]`` at 16 kHz through the audio contract, flagged."""
        if isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__"):
            loaded = load_audio(audio, sample_rate=self.sample_rate, channels=channels)
            rows, flags, source = loaded.waveform, loaded.flags, str(audio)
        else:
            if sample_rate is None:
                raise ValueError("predict() needs sample_rate= for array input (for example sample_rate=48000)")
            wave = to_float_audio(audio)
            if wave.dim() == 1:
                wave = wave.unsqueeze(0)
            elif wave.dim() != 2:
                raise ValueError(f"expected [samples] or [channels, samples], got {tuple(wave.shape)}")
            rows = resample(select_channels(wave, channels)[0], sample_rate, self.sample_rate)
            flags, source = [quality_flags(row) for row in rows], "the audio array"
        for row, flag in enumerate(flags):
            problems = [name for name in ("clipped", "silent") if getattr(flag, name)]
            if problems:
                where = f"{source} (row {row})" if len(flags) > 1 else source
                warnings.warn(f"{where} is {' and '.join(problems)}; its scores are not reliable",
                              AudioQualityWarning, stacklevel=3)
        return rows

    def extra_repr(self) -> str:
        head = f"{len(self.label_map)} labels" if self.label_map is not None else "no species head"
        return f"name={self.name!r}, sample_rate={self.sample_rate}, {head}"
