"""The user-facing model: float audio in, species logits or frame features out.

``AvexModel`` wraps the filterbank, the BEATs encoder and the species head, and owns the label map.
It validates its input (so a wrong tensor fails with a message instead of a wrong answer) and
offers the operations people use by name: ``hidden_states``, ``embed``, ``predict``.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Iterator

import torch
from torch import nn

from ..audio.arrays import MIN_SAMPLES, SAMPLE_RATE, select_channels, to_float_audio
from ..audio.decoding import audio_info, load_audio
from ..audio.quality import AudioQualityWarning, QualityFlags, quality_flags
from ..audio.resampling import resample
from .beats import BEATs, BEATsConfig, EncoderOutput, frame_padding_mask
from .fbank import FbankConfig, KaldiFbank
from ..labels import LabelMap
from .precision import default_batch_size, resolve_device
from .preprocessing import Preprocessing
from ..audio.windows import Window, iter_array_windows, stream_windows

__all__ = ["AvexModel", "Prediction", "WindowPrediction", "WindowEmbeddings", "LongInputWarning",
           "LONG_INPUT_S", "validate_audio", "MIN_SAMPLES", "POOLINGS", "check_pooling"]

LONG_INPUT_S = 60.0  # tensors longer than this (at the model's rate) get a LongInputWarning
POOLINGS = ("mean", "max")  # what AvexModel.pool does over frames (and embed's clip_pooling over windows)


def check_pooling(pooling, name: str = "pooling", hint: str = "") -> None:
    """Refuse anything but ``"mean"`` or ``"max"`` (``POOLINGS``); ``name`` is the parameter in the message."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"{name} must be 'mean' or 'max', got {pooling!r}{hint}")


class LongInputWarning(UserWarning):
    """A tensor far longer than the model's training clips went through one attention pass (memory and
    time grow with the square of its length); ``predict``/``embed`` on the recording window it instead."""


@dataclass(frozen=True)
class Prediction:
    """One label of a top-k answer; ``score`` is a sigmoid probability (the head is multi-label).

    From :meth:`AvexModel.predict` on a recording, ``score`` is the label's best window score and
    ``start_s``/``end_s`` (seconds of the recording) are that window's span.
    """

    label: str
    index: int
    score: float
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class WindowPrediction:
    """One label of one window's top-k (``predict(..., per_window=True)``): the values ``classify_files`` gives."""

    start_s: float  # seconds of the recording
    end_s: float  # end of the window's real audio
    label: str
    index: int
    score: float  # sigmoid probability


@dataclass(frozen=True)
class WindowEmbeddings:
    """Per-window embeddings of one recording (``embed(..., per_window=True)``), in time order."""

    embeddings: torch.Tensor  # float32 [windows, C]
    start_s: torch.Tensor  # float64 [windows], seconds of the recording
    end_s: torch.Tensor  # float64 [windows], end of each window's real audio


@dataclass
class _Batch:
    """Windows of one recording, ready for the model: ``audio``/``padding_mask`` ``[b, samples]`` (mask None
    when unpadded), and per window the answer row (channel position), start and end in seconds."""

    audio: torch.Tensor
    padding_mask: torch.Tensor | None
    row: list[int]
    start_s: list[float]
    end_s: list[float]


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
            f"audio of {audio.shape[1]} samples ({audio.shape[1] / SAMPLE_RATE:.3f} s at {SAMPLE_RATE // 1000} kHz) "
            f"is shorter than the {min_samples} samples ({min_samples / SAMPLE_RATE:.3f} s) of one 16-frame patch; "
            "pad it with zeros and pass a padding_mask, or use longer clips"
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
        # The encoder reduces the mask to frames dropping the row's last samples (up to min_samples - 1 of them),
        # so fewer valid samples than one patch, not starting the row, can leave no valid frame: NaN outputs.
        # A short clip at the start of its row (trailing padding, as collate and windows make) always keeps one.
        valid = (~padding_mask).sum(dim=1)
        unseen = (valid < min_samples) & padding_mask[:, 0]
        if bool(unseen.any()):
            rows = unseen.nonzero().flatten().tolist()
            raise ValueError(f"batch rows {rows[:10]} start with padding and have fewer valid samples than the "
                             f"{min_samples} of one 16-frame patch (row {rows[0]}: {valid[rows[0]].item()}): the "
                             "encoder would see none of them. Put each clip at the start of its row (padding after "
                             f"it), or give it at least {min_samples} valid samples")
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
        (only ``hidden_layers`` of them when given, the others None).

        The whole tensor is one attention pass: beyond ``LONG_INPUT_S`` seconds a LongInputWarning says
        so (``predict``/``embed`` on a recording window it by the model's ``preprocessing.window_s``).
        """
        audio, padding_mask = validate_audio(audio, padding_mask)
        self._warn_if_long(audio.shape[1])
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
        items = [layers] if isinstance(layers, Integral) else list(layers)  # Integral: numpy ints are ints too
        if not items or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items):
            raise TypeError(f"layers must be 'all', 'last', an int or a list of ints, got {layers!r}")
        items = [int(i) for i in items]
        resolved = [i + n + 1 if i < 0 else i for i in items]
        bad = [i for i, r in zip(items, resolved) if not 0 <= r <= n]
        if bad:
            raise ValueError(f"layer indices {bad} out of range; expected 0..{n} or -{n + 1}..-1")
        return resolved

    @staticmethod
    def pool(features: torch.Tensor, padding_mask: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, C]`` over frames that are not padding (``mean`` or ``max``)."""
        check_pooling(pooling)
        if pooling == "mean":
            if padding_mask is None:
                return features.mean(dim=1)
            valid = (~padding_mask).unsqueeze(-1).to(features.dtype)
            return (features * valid).sum(dim=1) / valid.sum(dim=1)
        if padding_mask is None:
            return features.amax(dim=1)
        return features.masked_fill(padding_mask.unsqueeze(-1), float("-inf")).amax(dim=1)

    def embed(self, audio, padding_mask: torch.Tensor | None = None, *, layer: int = -1, pooling: str = "mean",
              sample_rate: int | None = None, channels: str | int = "mix", per_window: bool = False,
              clip_pooling: str = "mean", batch_size: int | None = None):
        """A pooled embedding from one layer (default: the last), frames pooled by ``pooling``.

        A tensor ``[B, samples]`` at the model's rate (no ``sample_rate``): ``[B, C]``, each row one
        attention pass, as before. A recording (a file path, or an array or tensor with ``sample_rate``):
        cut into the model's windows (``preprocessing.window_s``, the last one padded and masked; files
        are streamed), embedded ``batch_size`` windows at a time (default as ``inference``: 2 on CPU, 64 on
        CUDA); ``per_window=True`` returns :class:`WindowEmbeddings`,
        otherwise the windows pooled by ``clip_pooling`` (``"mean"`` of the window embeddings, or
        ``"max"``): ``[C]``, or ``[channels, C]`` (one answer per channel) for ``channels="all"``.
        """
        if isinstance(audio, torch.Tensor) and sample_rate is None:
            if per_window or channels != "mix":
                raise ValueError("per_window and channels apply to a recording: pass sample_rate= with the tensor "
                                 "(or a file path), or drop them for a batch [B, samples] at model.sample_rate")
            return self.pooled_layers(audio, padding_mask, layers=[layer], pooling=pooling)[:, 0]
        if padding_mask is not None:
            raise ValueError("padding_mask applies to a batch tensor [B, samples]; a recording is windowed and "
                             "masked here: pass it without padding_mask")
        check_pooling(clip_pooling, "clip_pooling")
        answers = self._embed_recording(self._recording_batches(audio, sample_rate, channels, batch_size), layer,
                                        pooling)
        if not per_window:
            answers = [a.embeddings.mean(0) if clip_pooling == "mean" else a.embeddings.amax(0) for a in answers]
        if channels == "all":
            return torch.stack(answers) if not per_window else answers
        return answers[0]

    @torch.inference_mode()
    def _embed_recording(self, batches: Iterator[_Batch], layer: int, pooling: str) -> list[WindowEmbeddings]:
        self.layer_indices([layer]), self.pool(torch.zeros(1, 1, 1), None, pooling)  # bad arguments fail first
        parts: dict[int, list] = {}
        for batch in batches:
            emb = self.pooled_layers(batch.audio, batch.padding_mask, layers=[layer], pooling=pooling)[:, 0]
            for i, row in enumerate(batch.row):
                parts.setdefault(row, []).append((emb[i].float().cpu(), batch.start_s[i], batch.end_s[i]))
        return [WindowEmbeddings(torch.stack([e for e, _, _ in rows]),
                                 torch.tensor([s for _, s, _ in rows], dtype=torch.float64),
                                 torch.tensor([e for _, _, e in rows], dtype=torch.float64))
                for _, rows in sorted(parts.items())]

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

    # -- recordings of any length ----------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, audio, sample_rate: int | None = None, *, top_k: int = 5, channels: str | int = "mix",
                per_window: bool = False, batch_size: int | None = None):
        """Top-k species with sigmoid scores for a recording of any length, or for each of a list of them.

        ``audio`` is a file path, a 1-D array (one mono recording) or a 2-D array ``[channels,
        samples]`` (one multi-channel recording) at ``sample_rate`` (required for arrays); it is
        resampled to the model's rate. It is cut into the model's windows (``preprocessing.window_s``,
        10 s; the last padded and masked), run ``batch_size`` windows at a time (default as ``inference``:
        2 on CPU, 64 on CUDA; peak memory grows with it); files are streamed, so memory does not grow
        with length. A recording of at most one window is scored whole, unpadded, as before.

        Returns a list of :class:`Prediction`: per label the MAX of its window scores, with the span
        (``start_s``, ``end_s``) of that best window. ``per_window=True`` returns time-stamped rows
        instead, :class:`WindowPrediction` (``start_s, end_s, label, index, score``; each window's top-k,
        time order): the values ``inference.classify_files`` gives for a file. ``channels``: ``"mix"``
        (default) or a channel index give one answer; ``"all"`` gives one answer per channel. Clipped or
        silent audio is scored but warned about by name.
        """
        if self.classifier is None:
            raise ValueError(f"{self.name} has no species head to predict with; use embed() or a probe")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1 (the number of labels to return), got {top_k!r}")
        if isinstance(audio, (list, tuple)):
            return [self.predict(item, sample_rate, top_k=top_k, channels=channels, per_window=per_window,
                                 batch_size=batch_size) for item in audio]
        k = min(top_k, len(self.labels))
        batches = self._recording_batches(audio, sample_rate, channels, batch_size)
        answers = self._window_rows(batches, k) if per_window else self._best_windows(batches, k)
        return answers if channels == "all" else answers[0]

    def _window_scores(self, batches: Iterator[_Batch]) -> Iterator[tuple[_Batch, torch.Tensor]]:
        for batch in batches:
            yield batch, torch.sigmoid(self.logits(batch.audio, batch.padding_mask)).float().cpu()  # [b, labels]

    def _best_windows(self, batches: Iterator[_Batch], k: int) -> list[list[Prediction]]:
        """Per row: each label's max window score and where it was; top-k of those (memory: one row of scores)."""
        best: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # row -> (max, start, end) [labels]
        for batch, scores in self._window_scores(batches):
            for i, row in enumerate(batch.row):
                start = torch.full_like(scores[i], batch.start_s[i], dtype=torch.float64)
                end = torch.full_like(start, batch.end_s[i])
                if row not in best:
                    best[row] = (scores[i], start, end)
                    continue
                top, starts, ends = best[row]
                better = scores[i] > top  # ties keep the earlier window
                best[row] = (torch.where(better, scores[i], top), torch.where(better, start, starts),
                             torch.where(better, end, ends))
        answers = []
        for _, (top, starts, ends) in sorted(best.items()):
            values, indices = top.topk(k)
            answers.append([Prediction(self.label_map.name(i), i, v, float(starts[i]), float(ends[i]))
                            for v, i in zip(values.tolist(), indices.tolist())])
        return answers

    def _window_rows(self, batches: Iterator[_Batch], k: int) -> list[list[WindowPrediction]]:
        """Per row: each window's top-k as time-stamped rows."""
        rows: dict[int, list[WindowPrediction]] = {}
        for batch, scores in self._window_scores(batches):
            values, indices = scores.topk(k, dim=1)
            for i, row in enumerate(batch.row):
                rows.setdefault(row, []).extend(
                    WindowPrediction(batch.start_s[i], batch.end_s[i], self.label_map.name(j), j, v)
                    for v, j in zip(values[i].tolist(), indices[i].tolist()))
        return [rows[r] for r in sorted(rows)]

    def _recording_batches(self, audio, sample_rate: int | None, channels,
                           batch_size: int | None = None) -> Iterator[_Batch]:
        """A recording -> batches of its windows on the model's device (``default_batch_size`` windows each).

        At most one window long: one unpadded batch, as the model always scored short clips. Longer: the
        windows of ``stream_windows`` (files) or ``iter_array_windows`` (arrays), whose quality flags are
        gathered per channel and warned about once the recording is done.
        """
        device = self.device
        size = default_batch_size(device) if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (windows per model call) or None, got {batch_size!r}")
        short = self._short_rows(audio, sample_rate, channels)
        if short is not None:
            n = short.shape[1]
            yield _Batch(short.to(device), None, list(range(len(short))), [0.0] * len(short),
                         [n / self.sample_rate] * len(short))
            return
        windows, source = self._windows(audio, sample_rate, channels)
        rows: dict[int | None, int] = {}  # source channel (None: the mix) -> answer row
        flags: dict[int, QualityFlags] = {}  # per answer row, merged over its windows so far
        batch: list[Window] = []
        for window in windows:
            row = rows.setdefault(window.channel, len(rows))
            flags[row] = _merge_flags(flags.get(row), window.flags)
            batch.append(window)
            if len(batch) == size:
                yield self._stack(batch, rows, device)
                batch = []
        if batch:
            yield self._stack(batch, rows, device)
        _warn_quality([f for _, f in sorted(flags.items())], source)

    @staticmethod
    def _stack(windows: list[Window], rows: dict, device: torch.device) -> _Batch:
        return _Batch(torch.stack([w.audio for w in windows]).to(device),
                      torch.stack([w.padding_mask for w in windows]).to(device),
                      [rows[w.channel] for w in windows], [w.start_s for w in windows], [w.end_s for w in windows])

    def _window_samples(self) -> int:
        return round(self.preprocessing.window_s * self.sample_rate)

    def _short_rows(self, audio, sample_rate: int | None, channels) -> torch.Tensor | None:
        """``[rows, samples]`` of a recording that fits one window (loaded whole, flagged); None if longer."""
        if _is_path(audio):
            info = audio_info(audio)
            length = info.frames * self.sample_rate / info.sample_rate
        else:
            if sample_rate is None:
                raise ValueError("predict() and embed() need sample_rate= for array input (for example "
                                 "sample_rate=48000); a tensor at model.sample_rate without it is a batch")
            length = audio.shape[-1] * self.sample_rate / sample_rate if hasattr(audio, "shape") else 0
        return self._predict_input(audio, sample_rate, channels) if length <= self._window_samples() else None

    def _windows(self, audio, sample_rate: int | None, channels) -> tuple[Iterator[Window], str]:
        window_s = self.preprocessing.window_s
        if _is_path(audio):
            return stream_windows(audio, window_s=window_s, channels=channels), str(audio)
        return iter_array_windows(audio, sample_rate, window_s=window_s, channels=channels,
                                  name="the audio array"), "the audio array"

    def _predict_input(self, audio, sample_rate: int | None, channels) -> torch.Tensor:
        """Any accepted input -> ``[rows, samples]`` at 16 kHz through the audio contract, flagged."""
        if _is_path(audio):
            loaded = load_audio(audio, target_rate=self.sample_rate, channels=channels)
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
        _warn_quality(flags, source)
        return rows

    # -- devices and long tensors ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.parameters()).device

    def to(self, *args, **kwargs):
        """``nn.Module.to``, with a clear error for a device this torch cannot use (e.g. CUDA on a CPU build)."""
        for arg in (*args, kwargs.get("device")):
            if isinstance(arg, (str, torch.device)):  # the other arguments are dtypes, tensors, flags
                resolve_device(arg)
        return super().to(*args, **kwargs)

    def cuda(self, device=None):
        resolve_device("cuda" if device is None else torch.device("cuda", device) if isinstance(device, int)
                       else device)
        return super().cuda(device)

    def _warn_if_long(self, samples: int) -> None:
        seconds = samples / self.sample_rate
        if seconds > LONG_INPUT_S:
            warnings.warn(
                f"a {seconds:.0f} s tensor goes through one attention pass (memory and time grow with the square of "
                f"its length; the model was trained on {self.preprocessing.window_s:g} s clips). For long audio use "
                "model.predict(audio, sample_rate) or model.embed(audio, sample_rate=...) (file paths work too), "
                "which window it; or avex_hub.embed.inference.classify_files / embed_files", LongInputWarning,
                stacklevel=_caller_level())

    def extra_repr(self) -> str:
        head = f"{len(self.label_map)} labels" if self.label_map is not None else "no species head"
        return f"name={self.name!r}, sample_rate={self.sample_rate}, {head}"


def _caller_level() -> int:
    """The ``stacklevel`` (for a warning raised by the calling function) of the first frame outside avex_hub and
    torch: the user's line, however deep the call went (forward, embed -> pooled_layers -> encode, generators)."""
    inside = (os.path.dirname(__file__), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _is_path(audio) -> bool:
    return isinstance(audio, (str, bytes)) or hasattr(audio, "__fspath__")


def _merge_flags(merged: QualityFlags | None, window: QualityFlags) -> QualityFlags:
    """A recording's flags from its windows': clipped if any window is, silent (too short) if all are."""
    if merged is None:
        return window
    return QualityFlags(clipped=merged.clipped or window.clipped, silent=merged.silent and window.silent,
                        too_short=merged.too_short and window.too_short)


def _warn_quality(flags: list[QualityFlags], source: str) -> None:
    for row, flag in enumerate(flags):
        problems = [name for name in ("clipped", "silent") if getattr(flag, name)]
        if problems:
            where = f"{source} (row {row})" if len(flags) > 1 else source
            warnings.warn(f"{where} is {' and '.join(problems)}; its scores are not reliable",
                          AudioQualityWarning, stacklevel=_caller_level())
