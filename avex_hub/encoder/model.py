"""The user-facing model: float audio in, species logits or frame features out.

``AvexModel`` wraps the filterbank, the BEATs encoder and the species head, and owns the label map.
It validates its input (so a wrong tensor fails with a message instead of a wrong answer) and
offers the operations people use by name: ``hidden_states``, ``embed``, ``predict``.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import torch
from torch import nn

from .._warnings import user_stacklevel
from ..audio.arrays import MIN_SAMPLES, SAMPLE_RATE
from ..labels import LabelMap
from . import recordings
from .beats import BEATs, BEATsConfig, EncoderOutput, frame_padding_mask
from .fbank import FbankConfig, KaldiFbank
from .precision import resolve_device
from .preprocessing import Preprocessing

__all__ = ["AvexModel", "LongInputWarning", "LONG_INPUT_S", "validate_audio", "MIN_SAMPLES", "POOLINGS",
           "check_pooling"]

LONG_INPUT_S = 60.0  # tensors longer than this (at the model's rate) get a LongInputWarning
POOLINGS = ("mean", "max")  # what AvexModel.pool does over frames (and embed's clip_pooling over windows)


def check_pooling(pooling, name: str = "pooling", hint: str = "") -> None:
    """Refuse anything but ``"mean"`` or ``"max"`` (``POOLINGS``); ``name`` is the parameter in the message."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"{name} must be 'mean' or 'max', got {pooling!r}{hint}")


class LongInputWarning(UserWarning):
    """A tensor far longer than the model's training clips went through one attention pass (memory and
    time grow with the square of its length); ``predict``/``embed`` on the recording window it instead."""


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
        return self.backbone(*self.encoder_inputs(audio, padding_mask), output_hidden_states=output_hidden_states,
                             num_layers=num_layers, hidden_layers=hidden_layers)

    def encoder_inputs(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> tuple:
        """What the encoder (and a runtime's graph) runs on: the filterbank ``[B, T, mels]``, the frame mask or None."""
        audio, padding_mask = validate_audio(audio, padding_mask)
        self._warn_if_long(audio.shape[1])
        fbank = self.preprocess(audio)
        return fbank, frame_padding_mask(padding_mask, fbank.shape[1]) if padding_mask is not None else None

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
              clip_pooling: str = "mean", batch_size: int | None = None, runtime: str = "torch",
              precision: str = "fp32", threads: int | None = None):
        """A pooled embedding from one layer (default: the last), frames pooled by ``pooling``.

        A tensor ``[B, samples]`` at the model's rate (no ``sample_rate``): ``[B, C]``, each row one attention
        pass. A recording (a file path, or an array or tensor with ``sample_rate``): windowed and batched as in
        :meth:`predict`; ``per_window=True`` returns :class:`~avex_hub.encoder.recordings.WindowEmbeddings`,
        otherwise the windows pooled by ``clip_pooling`` (``"mean"`` or ``"max"``): ``[C]``, or
        ``[channels, C]`` for ``channels="all"``. ``runtime``, ``precision`` and ``threads`` as in :meth:`predict`.
        """
        if isinstance(audio, torch.Tensor) and sample_rate is None:
            if per_window or channels != "mix":
                raise ValueError("per_window and channels apply to a recording: pass sample_rate= with the tensor "
                                 "(or a file path), or drop them for a batch [B, samples] at model.sample_rate")
            return self.pooled_layers(audio, padding_mask, layers=[layer], pooling=pooling)[:, 0]
        if padding_mask is not None:
            raise ValueError("padding_mask applies to a batch tensor [B, samples]; pass a recording without it")
        check_pooling(clip_pooling, "clip_pooling")
        return recordings.embed(self, audio, sample_rate, layer=layer, pooling=pooling, channels=channels,
                                per_window=per_window, clip_pooling=clip_pooling, batch_size=batch_size,
                                runtime=runtime, precision=precision, threads=threads)

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
    def predict(self, audio, sample_rate: int | None = None, *, top_k: int = 5, channels: str | int = "mix",
                per_window: bool = False, batch_size: int | None = None, thresholds=None, runtime: str = "torch",
                precision: str = "fp32", threads: int | None = None):
        """Top-k species with sigmoid scores for a recording of any length, or for each of a list of them.

        ``audio``: a file path, a 1-D array (mono) or a 2-D array ``[channels, samples]`` at ``sample_rate`` (required
        for arrays), resampled and run through :mod:`avex_hub.encoder.recordings`: the model's windows
        (``preprocessing.window_s``, 10 s; the last padded and masked; a recording of at most one window at its own
        length), ``batch_size`` at a time (default 2 on CPU, 64 on CUDA); files are streamed. Returns
        :class:`~avex_hub.encoder.recordings.Prediction` per label: the MAX of its window scores, with that window's
        ``start_s``/``end_s``; ``per_window=True``: each window's top-k as
        :class:`~avex_hub.encoder.recordings.WindowPrediction` rows, the values ``classify_files`` gives.
        ``channels``: ``"mix"`` (default) or a channel index give one answer, ``"all"`` one per channel. Clipped or
        silent audio is scored but warned about by name. ``thresholds`` (``Thresholds.load(FILE)``,
        :mod:`avex_hub.monitoring.calibration`; refused for another model's): its labels instead of the top k, with
        ``probability`` and ``detected``. ``runtime``, ``precision``, ``threads``: as ``load_runtime``'s.
        """
        return recordings.predict(self, audio, sample_rate, top_k=top_k, channels=channels, per_window=per_window,
            batch_size=batch_size, thresholds=thresholds, runtime=runtime, precision=precision, threads=threads)

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
                stacklevel=user_stacklevel())

    def extra_repr(self) -> str:
        head = f"{len(self.label_map)} labels" if self.label_map is not None else "no species head"
        return f"name={self.name!r}, sample_rate={self.sample_rate}, {head}"
