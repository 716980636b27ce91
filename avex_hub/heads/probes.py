"""Probes: a small trainable head on an esp-aves2 backbone, ``probe(audio) -> [batch, num_classes]``.

    probe = avex_hub.linear_probe(model, 10, layers="all")      # softmax-weighted mix of all layers
    result = avex_hub.heads.training.train_probe(probe, train, val)    # offline: embeddings cached, then seconds

A probe is ``backbone -> layer selection -> pooling over frames -> head``:

- layers: ``"last"``, an int, a list of indices, or ``"all"`` (layer 0 is the encoder input). Several
  layers are mixed with softmax weights, learned by default (``learned_layer_weights=False``: equal).
- pooling: ``mean`` or ``max`` over frames that are not padding, applied to each selected layer
  before the layers are mixed (pool, then mix). For ``mean`` this equals mixing then pooling; for ``max``
  it is the definition. Either way the probe only needs per-layer pooled embeddings ``[B, L, C]``, so it
  trains exactly on cached embeddings (``forward_embeddings``) and runs unchanged on audio afterwards.
  ``attention`` (the attention probe) mixes the layers' frames and pools them with learned queries; it
  needs frames, so it trains online.
- head: ``Linear(C, num_classes)``, or an MLP ``Linear -> GELU -> Dropout -> Linear``.

A frozen backbone (the default) has ``requires_grad=False``, runs under ``no_grad`` and stays in eval mode
when ``probe.train()`` is called (the tiny and published configs have layer drop, which train mode enables).
"""

from __future__ import annotations

from ..encoder.model import AvexModel, check_pooling
from .probe_files import load_probe, save_probe
from .probe_module import DEFAULT_HIDDEN_DIM, PROBE_POOLINGS, AttentionPooling, Probe

# The Probe module and the probe files live in probe_module.py and probe_files.py, and are imported from here.
__all__ = ["Probe", "AttentionPooling", "linear_probe", "mlp_probe", "attention_probe", "save_probe",
           "load_probe", "PROBE_POOLINGS", "DEFAULT_HIDDEN_DIM"]


def _check_mean_or_max(builder: str, pooling: str) -> None:
    check_pooling(pooling, f"{builder} pooling",
                  "; use attention_probe for attention pooling" if pooling == "attention" else "")


def linear_probe(backbone: AvexModel, num_classes: int, *, layers: str | int | list[int] = "last",
                 pooling: str = "mean", freeze_backbone: bool = True, multilabel: bool = False,
                 learned_layer_weights: bool = True, label_names: list[str] | None = None, seed: int = 0) -> Probe:
    """A linear probe: pooled (mixed) layer embedding -> ``Linear(C, num_classes)``."""
    _check_mean_or_max("linear_probe", pooling)
    return Probe(backbone, num_classes, layers=layers, pooling=pooling, head="linear",
                 freeze_backbone=freeze_backbone, multilabel=multilabel,
                 learned_layer_weights=learned_layer_weights, label_names=label_names, seed=seed)


def mlp_probe(backbone: AvexModel, num_classes: int, *, layers: str | int | list[int] = "last",
              pooling: str = "mean", hidden_dim: int = DEFAULT_HIDDEN_DIM, dropout: float = 0.1,
              freeze_backbone: bool = True,
              multilabel: bool = False, learned_layer_weights: bool = True, label_names: list[str] | None = None,
              seed: int = 0) -> Probe:
    """A two-layer MLP probe: ``Linear(C, hidden_dim) -> GELU -> Dropout -> Linear(hidden_dim, num_classes)``."""
    _check_mean_or_max("mlp_probe", pooling)
    return Probe(backbone, num_classes, layers=layers, pooling=pooling, head="mlp", hidden_dim=hidden_dim,
                 dropout=dropout, freeze_backbone=freeze_backbone, multilabel=multilabel,
                 learned_layer_weights=learned_layer_weights, label_names=label_names, seed=seed)


def attention_probe(backbone: AvexModel, num_classes: int, *, layers: str | int | list[int] = "last",
                    num_heads: int = 4, hidden_dim: int | None = None,
                    dropout: float = 0.0, freeze_backbone: bool = True, multilabel: bool = False,
                    learned_layer_weights: bool = True, label_names: list[str] | None = None,
                    seed: int = 0) -> Probe:
    """An attention probe: learned-query attention pooling over frames, then a linear head (an MLP head with
    ``hidden_dim`` units when given). Its pooling is attention by definition; linear_probe and mlp_probe pool by
    mean or max."""
    return Probe(backbone, num_classes, layers=layers, pooling="attention",
                 head="linear" if hidden_dim is None else "mlp",
                 hidden_dim=DEFAULT_HIDDEN_DIM if hidden_dim is None else hidden_dim,
                 dropout=dropout,
                 num_heads=num_heads, freeze_backbone=freeze_backbone, multilabel=multilabel,
                 learned_layer_weights=learned_layer_weights, label_names=label_names, seed=seed)
