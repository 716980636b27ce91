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

import json
import math
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..encoder.model import POOLINGS, AvexModel, check_pooling

__all__ = ["Probe", "AttentionPooling", "linear_probe", "mlp_probe", "attention_probe", "save_probe",
           "load_probe", "PROBE_POOLINGS"]

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


def _check_backbone(backbone) -> None:
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
            _check_backbone(backbone)
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
                              else [layers] if isinstance(layers, int) else [int(i) for i in layers])
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


# -- saving: the head, its config and its provenance (avex_hub.hub.provenance) ---------------------------------------
def save_probe(probe: Probe, path: str | os.PathLike, *, metrics=None, label_names: list[str] | None = None,
               backbone: AvexModel | None = None) -> Path:
    """Write the probe's head (and the backbone too when it was fine-tuned) to ``path`` (safetensors, atomic).

    Its config and :class:`~avex_hub.hub.provenance.Provenance` (backbone weights digest and architecture, the
    preprocessing contract, layers and pooling, label names, ``metrics``: a TrainResult or a dict) go into the
    file's header and, for people to read, into ``<path>.json``. ``label_names`` names the classes when the probe
    has none. A probe for precomputed embeddings (no backbone) needs ``backbone=``, the model the embeddings came
    from, unless it was loaded with ``load_probe`` (its provenance is kept).
    """
    from safetensors.torch import save_file

    from ..hub.provenance import FORMAT_VERSION, PROBE_META_KEY, Provenance, metrics_dict

    names = list(label_names) if label_names is not None else probe.label_names
    if names is not None and len(names) != probe.num_classes:
        raise ValueError(f"label_names has {len(names)} names but the probe has {probe.num_classes} classes")
    if label_names is not None and probe.label_names is not None and list(label_names) != probe.label_names:
        raise ValueError(f"label_names={list(label_names)[:5]}... differ from the probe's own "
                         f"{probe.label_names[:5]}...; build the probe with the right names")
    previous = getattr(probe, "provenance", None)
    model = probe.backbone if probe.backbone is not None else backbone
    if model is not None:
        _check_backbone(model)
        if model.embedding_dim != probe.embedding_dim:
            raise ValueError(f"backbone {model.name} has {model.embedding_dim}-dim embeddings, the probe "
                             f"{probe.embedding_dim}; pass the model the embeddings came from")
        kind = "probe" if probe.frozen else "fine-tuned probe"
        provenance = Provenance.from_model(model, layers=probe.layer_indices, pooling=probe.pooling,
                                           label_names=names, metrics=metrics, kind=kind)
        if metrics is None and previous is not None:
            provenance = replace(provenance, metrics=previous.metrics)
    elif previous is not None:
        provenance = replace(previous, label_names=tuple(names) if names is not None else None,
                             metrics=metrics_dict(metrics) if metrics is not None else previous.metrics)
    else:
        raise ValueError("this probe has no backbone (a head for precomputed embeddings), so its provenance cannot "
                         "be recorded; pass backbone=<the model the embeddings came from> to save_probe")
    config = {**probe.config(), "label_names": names}
    meta = json.dumps({"format": "avex_hub.probe", "format_version": FORMAT_VERSION, "config": config,
                       "provenance": provenance.to_dict()}, indent=1, ensure_ascii=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for key, value in probe.head_state_dict().items():  # BEATs shares one relative-position table across layers:
        value = value.detach().cpu().contiguous()         # safetensors refuses shared storage, so copy repeats
        tensors[key] = value.clone() if value.untyped_storage().data_ptr() in seen else value
        seen.add(value.untyped_storage().data_ptr())
    from ..embed.outputs import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={PROBE_META_KEY: meta})
    with atomic_path(Path(str(path) + ".json")) as tmp:
        tmp.write_text(meta + "\n", encoding="utf-8")
    return path


def load_probe(path: str | os.PathLike, backbone: AvexModel | None = None, *,
               allow_backbone_mismatch: bool = False) -> Probe:
    """Rebuild a probe saved by ``save_probe`` on ``backbone``, or without one (a head for precomputed embeddings).

    The backbone must match the recorded provenance: weights digest, architecture, preprocessing and layers;
    otherwise a ProvenanceMismatchError names both sides of each difference (``allow_backbone_mismatch=True``
    loads anyway with a ProvenanceWarning). A probe saved on fresh weights (no digest) therefore needs the
    escape hatch. ``probe.provenance`` holds the label names and metrics recorded at saving.

    A probe file can never change ``backbone``: a frozen probe holds its head only (a ``backbone.*`` tensor in it
    is refused by name), and a fine-tuned probe (its provenance says so) loads its backbone tensors into a copy
    of ``backbone``, whose ``weights_sha256`` becomes the probe file's digest. The file's config, tensor shapes
    and dtypes are checked before anything is allocated, its values must be finite.
    """
    from ..hub.provenance import ProvenanceMismatchError, ProvenanceWarning, read_probe_metadata

    path = Path(path)
    meta = read_probe_metadata(path)
    provenance = meta["provenance"]
    config = dict(meta["config"])  # checked by read_probe_metadata: types, and agreement with the provenance
    fine_tuned = provenance.kind == "fine-tuned probe"
    if backbone is not None:
        _check_backbone(backbone)
        try:
            provenance.check_compatible(backbone, source=str(path))
        except ProvenanceMismatchError as error:
            if not allow_backbone_mismatch:
                raise
            warnings.warn(f"{error}\n(loaded anyway: allow_backbone_mismatch=True)", ProvenanceWarning, stacklevel=2)
    elif fine_tuned:
        raise ValueError(f"{path} fine-tuned its backbone, so its head fits only that backbone's embeddings; load it "
                         f"with backbone=<the base model> (a copy then holds the fine-tuned weights): "
                         f"{provenance.how_to_load()}")
    expected = _expected_shapes(config, backbone if fine_tuned else None, str(path))
    _check_probe_tensors(path, expected, fine_tuned)
    if fine_tuned:
        import copy

        backbone = copy.deepcopy(backbone)  # the caller's model keeps its weights, digest and trainability
    kind = config.pop("head")
    probe = Probe(backbone, head=kind, **config)
    state = _read_state(path, next(probe.parameters()).device)
    # Every key of `state` was checked against `expected` (the probe's own keys; the backbone's only for a
    # fine-tuned probe), so strict=False leaves out exactly the frozen backbone, whose weights stay as given.
    missing, unexpected = probe.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing) and (not fine_tuned or not missing)
    if fine_tuned:
        from ..hub.loading import sha256_file

        backbone.weights_sha256 = sha256_file(path)  # it holds this file's weights now, not the base file's
    probe.provenance = provenance
    return probe


def _expected_shapes(config: dict, backbone: AvexModel | None, source: str) -> dict[str, tuple[int, ...]]:
    """The tensors a probe file must hold: its head's (sized on the meta device, nothing allocated) and, for a
    fine-tuned probe, its backbone's."""
    options = {k: v for k, v in config.items() if k != "head"}
    try:
        with torch.device("meta"):
            skeleton = Probe(None, head=config["head"], **options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: the probe config is malformed: {error}") from None
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if backbone is not None:
        shapes.update({f"backbone.{k}": tuple(v.shape) for k, v in backbone.state_dict().items()})
    return shapes


def _check_probe_tensors(path: Path, expected: dict[str, tuple[int, ...]], fine_tuned: bool) -> None:
    """Names, shapes and dtypes of the file's tensors (read from its header) against ``expected``."""
    from ..hub.integrity import check_float_dtypes, tensor_header

    header = {_current_key(k): v for k, v in tensor_header(path).items()}
    intruders = sorted(k for k in header if k.startswith("backbone.") and k not in expected)
    if intruders and not fine_tuned:
        raise ValueError(f"{path} holds backbone tensors ({intruders[:5]}{' ...' if len(intruders) > 5 else ''}) but "
                         "its provenance says it is a frozen probe, whose file holds its head only: loading them "
                         "would silently replace the backbone's weights. Refused; a probe that fine-tuned its "
                         "backbone is saved by save_probe with kind 'fine-tuned probe'")
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} does not match the probe config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [f"{k}: config gives {shape}, file holds {header[k][1]}" for k, shape in expected.items()
             if header[k][1] != shape]
    if wrong:
        raise ValueError(f"{path}: tensor shapes disagree with the probe config ({'; '.join(wrong[:5])}); the file "
                         "is damaged or was edited by hand: save the probe again")
    check_float_dtypes(header, str(path))


def _read_state(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from ..hub.integrity import check_finite

    state = load_file(str(path), device=str(device))
    check_finite(state, str(path))
    return {_current_key(k): v for k, v in state.items()}


def _current_key(key: str) -> str:
    """A probe file's tensor name under this version's names: the attention probe's pooling module was
    ``pooling`` in files written before ``pooling`` became the name of the probe's pooling mode; it is
    ``attention`` now. The one place probe tensor names are mapped (header checks and loading both use it)."""
    return "attention." + key[len("pooling."):] if key.startswith("pooling.") else key
