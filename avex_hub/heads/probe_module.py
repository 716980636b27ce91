"""The probe itself: :class:`Probe` (backbone -> layer selection -> pooling over frames -> head, described in
:mod:`avex_hub.heads.probes`, where it is imported from) and :class:`AttentionPooling`.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import nn

from ..encoder.model import POOLINGS, AvexModel

__all__ = ["Probe", "AttentionPooling", "PROBE_POOLINGS", "DEFAULT_HIDDEN_DIM", "check_backbone"]

PROBE_POOLINGS = (*POOLINGS, "attention")
DEFAULT_HIDDEN_DIM = 256  # the MLP head's width when none is given


class AttentionPooling(nn.Module):
    """Multi-head attention pooling with learned queries: frames ``[B, N, C]`` -> ``[B, C]``.

    Each head h scores frames with ``key(x)_h . q_h / sqrt(D)``; padded frames get weight 0.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must divide the embedding dim {dim}; got num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.randn(num_heads, dim // num_heads) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, frames: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = frames.shape
        h = self.num_heads
        keys = self.key(frames).view(b, n, h, c // h)
        values = self.value(frames).view(b, n, h, c // h)
        scores = torch.einsum("bnhd,hd->bhn", keys, self.query) / math.sqrt(c // h)
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)  # [B, H, N]
        return torch.einsum("bhn,bnhd->bhd", weights, values).reshape(b, c)


def check_backbone(backbone) -> None:
    """TypeError unless ``backbone`` is an AvexModel."""
    if not isinstance(backbone, AvexModel):
        raise TypeError(f"backbone must be an avex_hub.AvexModel (e.g. avex_hub.esp_aves2_sl_beats_all()), "
                        f"got {type(backbone).__name__}")


class Probe(nn.Module):
    """A head on an AvexModel (see the module docstring); built by ``linear_probe``, ``mlp_probe``, ``attention_probe``.

    ``backbone=None`` with ``embedding_dim`` and explicit layer indices gives a head for precomputed embeddings
    (``forward_embeddings`` only). A new probe is in eval mode; ``train_probe`` switches modes as it needs.
    """

    def __init__(self, backbone: AvexModel | None, num_classes: int, *, layers: str | int | list[int] = "last",
                 pooling: str = "mean", head: str = "linear", hidden_dim: int = DEFAULT_HIDDEN_DIM,
                 dropout: float = 0.0,
                 num_heads: int = 4, freeze_backbone: bool = True, multilabel: bool = False,
                 learned_layer_weights: bool = True, label_names: list[str] | None = None, seed: int = 0,
                 embedding_dim: int | None = None) -> None:
        super().__init__()
        if backbone is not None:
            check_backbone(backbone)
            if embedding_dim is not None and embedding_dim != backbone.embedding_dim:
                raise ValueError(f"embedding_dim={embedding_dim} but the backbone's embeddings are "
                                 f"{backbone.embedding_dim}-dim; this probe belongs to another model")
        elif embedding_dim is None or isinstance(layers, str):
            raise ValueError("a probe without a backbone (a head for precomputed embeddings) needs embedding_dim= "
                             "and explicit layer indices (those of the Embeddings), not 'last'/'all'")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < (1 if multilabel else 2):
            raise ValueError(f"num_classes must be an int >= {1 if multilabel else 2} "
                             f"({'multi' if multilabel else 'single'}-label), got {num_classes!r}")
        if pooling not in PROBE_POOLINGS:
            raise ValueError(f"pooling must be one of {PROBE_POOLINGS}, got {pooling!r}")
        if head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        if head == "mlp" and (isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1):
            raise ValueError(f"hidden_dim must be a positive int (the MLP head's width), got {hidden_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"label_names has {len(label_names)} names but num_classes={num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        # Indices into the backbone's hidden states (ValueError when out of range); without a backbone, as given.
        self.layer_indices = (backbone.layer_indices(layers) if backbone is not None
                              else [int(layers)] if isinstance(layers, Integral) else [int(i) for i in layers])
        self._embedding_dim = backbone.embedding_dim if backbone is not None else int(embedding_dim)
        self.pooling = pooling
        self.head_type = head
        self.hidden_dim = hidden_dim if head == "mlp" else None
        self.dropout = dropout
        self.num_heads = num_heads if pooling == "attention" else None
        self.multilabel = bool(multilabel)
        self.learned_layer_weights = bool(learned_layer_weights) and len(self.layer_indices) > 1
        self.label_names = list(label_names) if label_names is not None else None
        self.seed = seed
        dim = self._embedding_dim
        # Seeded initialisation without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            num = len(self.layer_indices)
            if self.learned_layer_weights:
                self.layer_logits = nn.Parameter(torch.zeros(num))  # softmax(0) = equal weights at the start
            else:
                self.register_buffer("layer_logits", torch.zeros(num))
            self.attention = AttentionPooling(dim, num_heads) if pooling == "attention" else None
            if head == "linear":
                self.head = nn.Linear(dim, num_classes)
            else:
                self.head = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(hidden_dim, num_classes))
        if backbone is not None:
            self.to(next(backbone.parameters()).device)  # the head joins the backbone's device
        self.frozen = bool(freeze_backbone) or backbone is None
        if backbone is not None:  # the probe owns the backbone's trainability from here on
            backbone.requires_grad_(not self.frozen)
            if self.frozen:
                backbone.eval()
        self.eval()  # like the models: inference-ready; train_probe switches to train mode and back

    # -- properties ------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @property
    def needs_frames(self) -> bool:
        """True when the probe cannot train on pooled embeddings (attention pooling)."""
        return self.pooling == "attention"

    @property
    def layer_weights(self) -> torch.Tensor:
        """Softmax weights ``[L]`` of the selected layers (a single layer: ``[1.0]``)."""
        return self.layer_logits.softmax(dim=0)

    def train(self, mode: bool = True) -> "Probe":
        super().train(mode)
        if self.frozen and self.backbone is not None:
            self.backbone.eval()  # keep layer drop and dropout of a frozen backbone off
        return self

    # -- the computation -------------------------------------------------------------------------
    def frames(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The selected layers' frames (each ``[B, N, C]``) and the frame padding mask ``[B, N]`` or None."""
        if self.backbone is None:
            raise ValueError("this probe has no backbone (it was built for precomputed embeddings); "
                             "call forward_embeddings, or build it on a model to run on audio")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.backbone.encode(audio, padding_mask, output_hidden_states=True,
                                       num_layers=max(self.layer_indices))
        return [out.hidden_states[i] for i in self.layer_indices], out.padding_mask

    def embed(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-layer pooled embeddings ``[B, L, C]``: what ``forward_embeddings`` takes (mean/max probes)."""
        if self.needs_frames:
            raise ValueError("an attention probe pools frames with learned queries; it has no fixed embedding")
        return self._pool_layers(*self.frames(audio, padding_mask))

    def _pool_layers(self, hidden: list[torch.Tensor], padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Each layer's frames pooled with the probe's pooling (mean/max): ``[B, L, C]``."""
        return torch.stack([AvexModel.pool(h, padding_mask, self.pooling) for h in hidden], dim=1)

    def _mix(self, stacked: torch.Tensor) -> torch.Tensor:
        """``[B, L, ...]`` -> ``[B, ...]`` with the softmax layer weights."""
        if stacked.shape[1] == 1:  # one layer: its weight is exactly 1
            return stacked[:, 0]
        w = self.layer_weights.to(stacked.dtype)
        return torch.einsum("l,bl...->b...", w, stacked)

    def forward_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` from pooled embeddings ``[B, L, C]`` (or ``[B, C]`` for one layer)."""
        if self.needs_frames:
            raise ValueError("an attention probe needs frames, not pooled embeddings; call probe(audio) "
                             "or train it online (train_probe(..., mode='online'))")
        num = len(self.layer_indices)
        if embeddings.dim() == 2 and num == 1:
            embeddings = embeddings.unsqueeze(1)
        if embeddings.dim() != 3 or embeddings.shape[1:] != (num, self.embedding_dim):
            raise ValueError(f"expected embeddings [batch, {num}, {self.embedding_dim}] (layers "
                             f"{self.layer_indices}){' or [batch, %d]' % self.embedding_dim if num == 1 else ''}, "
                             f"got {tuple(embeddings.shape)}; extract them with layers={self.layer_indices} "
                             f"and pooling={self.pooling!r}")
        return self.head(self._mix(embeddings))

    def forward_frames(self, hidden: list[torch.Tensor], padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the selected layers' frames (list of ``[B, N, C]``) and a frame mask ``[B, N]``."""
        if self.needs_frames:
            return self.head(self.attention(self._mix(torch.stack(hidden, dim=1)), padding_mask))
        return self.forward_embeddings(self._pool_layers(hidden, padding_mask))

    def forward(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``audio`` ``[B, samples]`` 16 kHz float (and a bool padding mask, True = padding) -> logits."""
        hidden, mask = self.frames(audio, padding_mask)
        return self.forward_frames(hidden, mask)

    # -- saving ----------------------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments (without the backbone), JSON-serialisable."""
        return {"num_classes": self.num_classes, "layers": self.layer_indices, "embedding_dim": self._embedding_dim,
                "pooling": self.pooling,
                "head": self.head_type,
                "hidden_dim": DEFAULT_HIDDEN_DIM if self.hidden_dim is None else self.hidden_dim,
                "dropout": self.dropout,
                "num_heads": self.num_heads or 4, "freeze_backbone": self.frozen, "multilabel": self.multilabel,
                "learned_layer_weights": self.learned_layer_weights,
                "label_names": self.label_names, "seed": self.seed}

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but a frozen backbone (the part a probe training changes)."""
        return {k: v for k, v in self.state_dict().items() if not (self.frozen and k.startswith("backbone."))}

    def probe_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters outside the backbone (layer weights, attention pooling, head)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")]

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, layers={self.layer_indices}, pooling={self.pooling!r}, "
                f"head={self.head_type!r}, frozen={self.frozen}, multilabel={self.multilabel}")
