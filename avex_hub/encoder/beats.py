"""The BEATs audio transformer, batch-first, in one file.

Shapes use B = batch, T = filterbank frames, N = patch tokens (time steps x 8 frequency patches,
time-major), C = ``encoder_embed_dim`` (768 for esp-aves2), H = heads, D = C / H.

Parameter names follow the reference implementation exactly, so published state dicts load
strictly; the relative-position table is one module shared by every layer (as in the reference),
which is why it appears under each layer's key with identical values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Collection

import torch
import torch.nn.functional as F
from torch import nn

from .fastpath import linear, multiply_add, shared_buffers

__all__ = ["BEATsConfig", "BEATs", "EncoderOutput"]


# config.json keys of the reference BEATs that restate the preprocessing contract (its names for
# Preprocessing.sample_rate, fbank_mean, fbank_std); read only to check that they agree with it, never kept.
PREPROCESSING_KEYS = {"sample_frequency": "sample_rate", "fbank_mean": "fbank_mean", "fbank_std": "fbank_std"}


@dataclass
class BEATsConfig:
    """Architecture of a BEATs encoder; field names are the reference's ``config.json`` names.

    The architecture defaults are esp-aves2's; the training-time settings (dropouts, layer drop, gradient decay
    ratio) default to off, and :mod:`avex_hub.hub.weights` sets each published model's.
    """

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = True
    predictor_dropout: float = 0.0
    predictor_class: int = 527
    # Filterbank settings that the reference keeps beside the architecture. Its sample_frequency, fbank_mean and
    # fbank_std are not fields: Preprocessing holds them (see PREPROCESSING_KEYS).
    num_mel_bins: int = 128
    frame_length: float = 25.0
    frame_shift: float = 10.0
    # The gradient entering each transformer layer is multiplied by this ratio (TransformerEncoder, as the reference
    # does in training); the layer-wise learning-rate decay is a separate setting (avex_hub.heads.finetune).
    layer_wise_gradient_decay_ratio: float = 1.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BEATsConfig":
        """The fields of a config.json; ``PREPROCESSING_KEYS`` are tolerated and dropped (``Preprocessing`` holds
        them; ``avex_hub.hub.integrity.check_preprocessing`` refuses a config.json that states other values)."""
        values = {k: v for k, v in values.items() if k not in PREPROCESSING_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"config.json has fields this BEATs does not know: {unknown}; "
                f"expected only BEATs config names ({sorted(known)})"
            )
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                f"encoder_attention_heads ({self.encoder_attention_heads})"
            )
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("deep_norm requires post-LN layers (layer_norm_first=false)")
        if self.activation_fn != "gelu":
            raise ValueError(f"only activation_fn='gelu' is supported, got {self.activation_fn!r}")
        if self.num_mel_bins % self.input_patch_size:
            raise ValueError("num_mel_bins must be a multiple of input_patch_size")


@dataclass
class EncoderOutput:
    """What :meth:`BEATs.forward` returns.

    ``features``: ``[B, N, C]`` last-layer frames. ``padding_mask``: ``[B, N]`` (True = padding) or
    None. ``hidden_states``: when asked for, ``encoder_layers + 1`` tensors ``[B, N, C]``: index 0 is
    the encoder input (after the position convolution), index i the output of layer i; None at the
    indices left out by ``hidden_layers``.
    """

    features: torch.Tensor
    padding_mask: torch.Tensor | None
    hidden_states: list[torch.Tensor | None] | None = None


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """``[length, length]`` bucket ids: exact near the diagonal, log-spaced further out (T5-style)."""
    position = torch.arange(length, dtype=torch.long)
    relative = position[None, :] - position[:, None]  # key - query
    half = num_buckets // 2
    buckets = (relative > 0).long() * half  # the two directions use separate halves
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class _WeightNormParameters(nn.Module):
    """Holds g (``original0``) and v (``original1``) under the names torch's weight_norm uses."""

    def __init__(self, g: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.original0 = nn.Parameter(g)
        self.original1 = nn.Parameter(v)


class WeightNormConv1d(nn.Module):
    """A grouped Conv1d whose weight is ``g * v / ||v||``, the norm taken over all but the kernel axis.

    Equivalent to ``torch.nn.utils.parametrizations.weight_norm(conv, dim=2)`` with the same state-dict
    keys, but a plain module: it pickles (DataLoader workers under spawn) and deep-copies.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel_size // 2, groups
        v = torch.empty(channels, channels // groups, kernel_size)
        nn.init.normal_(v, std=math.sqrt(4.0 / (kernel_size * channels)))
        g = v.norm(dim=(0, 1), keepdim=True)  # [1, 1, K]
        self.parametrizations = nn.ModuleDict({"weight": _WeightNormParameters(g, v)})
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def weight(self) -> torch.Tensor:
        p = self.parametrizations["weight"]
        return p.original1 * (p.original0 / p.original1.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, N] -> [B, C, N + 1 - K % 2]
        # Always fp32: a bf16 grouped convolution with this long kernel is badly wrong on some CPU
        # kernels (relative error ~1 seen with torch 2.13), and it is a small share of the compute.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.conv1d(x.float(), self.weight.float(), self.bias.float(), padding=self.padding, groups=self.groups)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the gated (GRU-style) relative position bias."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.num_heads, self.head_dim = heads, dim // heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = config.gru_rel_pos
        if config.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        # Set by the encoder to its one shared table: nn.Embedding(num_buckets, heads).
        self.relative_attention_bias: nn.Embedding | None = None

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None,
                key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        split = lambda t: t.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(linear(self.q_proj, x)), split(linear(self.k_proj, x)), split(linear(self.v_proj, x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.attention_bias(q, position_bias, key_padding_mask),
            dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, N, D]
        return linear(self.out_proj, out.transpose(1, 2).reshape(B, N, C))

    def attention_bias(self, q: torch.Tensor, position_bias: torch.Tensor | None,
                       key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
        """What is added to the attention scores: the (gated) ``[H, N, N]`` position bias and -inf at padded keys,
        broadcastable to ``[B, H, N, N]``, in the attention's dtype; None when there is neither."""
        B, _, N, _ = q.shape
        masked = None
        if key_padding_mask is not None:
            masked = torch.zeros(B, 1, 1, N, dtype=q.dtype, device=q.device)
            masked = masked.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if position_bias is None:
            return masked
        bias = position_bias.unsqueeze(0).to(q.dtype)  # [1, H, N, N]
        if not self.gru_rel_pos:
            return bias if masked is None else bias + masked
        # A per-query, per-head gate computed from the unscaled query. The gate is small ([B, H, N, 1]) and computed
        # in float32; the [B, H, N, N] product is formed once, in the attention's dtype (under bf16 autocast a float32
        # product would be twice the memory traffic and then cast again), into a buffer the layers share.
        gates = torch.sigmoid(self.grep_linear(q).view(B, self.num_heads, N, 2, 4).sum(-1).float())
        gate_a, gate_b = gates.chunk(2, dim=-1)  # [B, H, N, 1] each
        gate = gate_a * (gate_b * self.grep_a.float() - 1.0) + 2.0
        return multiply_add(gate.to(bias.dtype), bias, masked)


class EncoderLayer(nn.Module):
    """A post-LN transformer layer; DeepNorm scales the residual branch by (2 * layers) ** 0.25."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = SelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout
        self.residual_scale = math.pow(2 * config.encoder_layers, 0.25) if config.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None,
                key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        attended = self.self_attn(x, position_bias, key_padding_mask)
        h = F.dropout(attended, self.dropout, self.training)
        x = self.self_attn_layer_norm(x * self.residual_scale + h)
        h = F.dropout(linear(self.fc1, x, "gelu"), self.activation_dropout, self.training)
        h = F.dropout(linear(self.fc2, h), self.dropout, self.training)
        return self.final_layer_norm(x * self.residual_scale + h)


class _GradientScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``. Applied before every layer with the
    config's ``layer_wise_gradient_decay_ratio``, as the reference BEATs does in training, so the gradient reaching
    layer k from above is scaled by ratio ** (layers above it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class TransformerEncoder(nn.Module):
    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        # Weight norm over the kernel axis: g is [1, 1, conv_pos], as in the reference.
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups))
        self.trim = 1 if config.conv_pos % 2 == 0 else 0  # an even kernel yields one extra step
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first
        self.dropout = config.dropout
        self.layerdrop = config.encoder_layerdrop
        self.gradient_decay = config.layer_wise_gradient_decay_ratio
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        if config.relative_position_embedding:
            table = nn.Embedding(config.num_buckets, config.encoder_attention_heads)
            for layer in self.layers:  # one table, registered under every layer like the reference
                layer.self_attn.relative_attention_bias = table

    def position_bias(self, length: int) -> torch.Tensor | None:
        """The shared ``[H, N, N]`` relative position bias, before each layer's gate."""
        table = self.layers[0].self_attn.relative_attention_bias
        if table is None:
            return None
        # Recomputed per call (about a millisecond at 10 s): a cached tensor made under
        # inference_mode could not be used later for training.
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return table(buckets.to(table.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None,
                output_hidden_states: bool = False, num_layers: int | None = None,
                hidden_layers: Collection[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)  # padded frames do not leak into the conv
        conv = self.pos_conv(x.transpose(1, 2))  # [B, C, N + trim]
        conv = conv[:, :, : conv.shape[2] - self.trim] if self.trim else conv
        x = x + F.gelu(conv).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        position_bias = self.position_bias(x.shape[1])
        if position_bias is not None and torch.is_autocast_enabled(x.device.type):
            # Cast once here rather than in each of the layers (they run their attention in this dtype).
            position_bias = position_bias.to(torch.get_autocast_dtype(x.device.type))
        keep = None if hidden_layers is None else set(hidden_layers)
        hidden = [x if keep is None or 0 in keep else None] if output_hidden_states else []
        scale_gradients = self.gradient_decay != 1.0 and torch.is_grad_enabled()
        with shared_buffers():  # the layers of this forward reuse one attention-bias buffer
            for index, layer in enumerate(self.layers[:num_layers], start=1):
                if scale_gradients and x.requires_grad:
                    x = _GradientScale.apply(x, self.gradient_decay)
                if not self.training or self.layerdrop == 0 or torch.rand(()) > self.layerdrop:
                    x = layer(x, position_bias, padding_mask)
                if output_hidden_states:  # a state nobody asked for is dropped at once (13 x [B, N, C] otherwise)
                    hidden.append(x if keep is None or index in keep else None)
        if self.layer_norm_first and num_layers is None:
            x = self.layer_norm(x)
        return x, hidden


def frame_padding_mask(padding_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Reduce a ``[B, L]`` mask to ``[B, num_frames]`` the reference's way.

    Trailing entries that do not divide evenly are dropped, the rest is cut into ``num_frames``
    equal runs, and a frame is padding only if its whole run is. Applied twice (samples -> filterbank
    frames -> patch tokens); the second step groups tokens in time-major order, as the reference does.
    """
    run = padding_mask.shape[1] // num_frames  # no branch on a length: the same graph serves every length
    return padding_mask[:, : num_frames * run].reshape(padding_mask.shape[0], num_frames, run).all(-1)


class BEATs(nn.Module):
    """Normalised filterbank ``[B, T, mels]`` -> patch tokens -> transformer -> ``[B, N, C]``."""

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        p = config.input_patch_size
        self.patch_embedding = nn.Conv2d(1, config.embed_dim, p, stride=p, bias=config.conv_bias)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim else None
        )
        self.encoder = TransformerEncoder(config)
        # The AudioSet head of the released checkpoints; kept so their weights load strictly.
        self.predictor = (
            nn.Linear(config.encoder_embed_dim, config.predictor_class) if config.finetuned_model else None
        )

    def forward(self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                output_hidden_states: bool = False, num_layers: int | None = None,
                hidden_layers: Collection[int] | None = None) -> EncoderOutput:
        """``fbank``: ``[B, T, mels]`` normalised; ``padding_mask``: ``[B, T]`` frame mask or None.

        ``num_layers`` stops after that many layers (cheaper when only early layers are wanted);
        ``hidden_layers`` keeps only those hidden states (the others are None), so memory does not grow with
        states nobody reads.
        """
        x = self.patch_embedding(fbank.unsqueeze(1))  # [B, E, T / 16, mels / 16]
        x = x.flatten(2).transpose(1, 2)  # [B, N, E], time-major
        x = self.layer_norm(x)
        if padding_mask is not None:
            padding_mask = frame_padding_mask(padding_mask, x.shape[1])
        if self.post_extract_proj is not None:
            x = linear(self.post_extract_proj, x)  # [B, N, C]
        x = F.dropout(x, self.config.dropout_input, self.training)
        x, hidden = self.encoder(x, padding_mask, output_hidden_states, num_layers, hidden_layers)
        return EncoderOutput(x, padding_mask, hidden if output_hidden_states else None)
