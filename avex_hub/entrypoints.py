"""The entry points: the builders behind ``hubconf.py`` and the package API; keyword-only, typed, documented.

``__all__`` is the one list of their names: ``hubconf.py`` and ``avex_hub`` import ``*`` from here, so a new entry
point is a function here and its name in that list (a model's name is also its ``hub.weights.WEIGHTS`` key; the
tests hold the two to each other).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .hub.loading import build_model, load_label_map
from .labels import LabelMap
from .encoder.model import AvexModel
from .encoder.precision import resolve_device

__all__ = [  # the one list of the entry points' names (torch.hub.list shows exactly these)
    "esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "esp_aves2_naturelm_audio_v1_beats",
    "label_map", "linear_probe", "mlp_probe", "attention_probe", "load_probe",
]

_ARGS = """
    Args:
        pretrained: load the published weights (downloaded once, SHA-256 verified); False gives
            the same architecture with fresh (randomly initialised) weights, offline: the encoder
            alone (``model(audio)`` returns frame features), or with ``num_classes=N`` a fresh
            N-class head. (For a fresh head the size of the published one:
            ``num_classes=len(avex_hub.label_map())``.)
        num_classes: with ``pretrained=False``, the size of a fresh species head (class names
            ``class_0`` ...); None: no head. Only with ``pretrained=False``: loaded weights bring
            their own head and label map.
        checkpoint: a local ``.safetensors`` file, or a folder with it, ``label_map.json`` and
            optionally ``config.json``; used instead of the Hub (air-gapped machines, fine-tunes).
        return_features_only: ``model(audio)`` returns frame features ``[batch, frames, 768]``
            instead of species logits.
        device: where to put the model (``"cuda"``, ``"cpu"``, ...); default CPU.
        revision: a Hub branch, tag or commit of the weights repository.
        progress: show download progress bars.
"""


def _check_num_classes(num_classes, loading: bool) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (the size of a fresh head), got {num_classes!r}")
    if loading:
        raise ValueError(f"num_classes={num_classes} sizes a fresh head and needs pretrained=False (and no "
                         "checkpoint); loaded weights bring their own head. To train a new head on them, use "
                         "AvexClassifier(model, labels=...) or a probe (avex_hub.linear_probe(model, N))")


def _check_device(device: str | torch.device | None) -> None:
    """A device this torch cannot use (``"cuda"`` on a CPU-only build) is a ValueError now, before any download."""
    if device is not None:
        resolve_device(device)



def _documented(builder):
    """Append the shared keyword arguments' documentation to a model entry point's one-line summary."""
    builder.__doc__ = builder.__doc__ + "\n" + _ARGS
    return builder


def _published_model(name: str, *, pretrained: bool, checkpoint: str | os.PathLike | None,
                     return_features_only: bool, device: str | torch.device | None, revision: str | None,
                     progress: bool, num_classes: int | None, **kwargs) -> AvexModel:
    """The one builder behind every model entry point: the weights entry ``name`` through ``build_model``."""
    _check_device(device)
    if num_classes is not None:
        _check_num_classes(num_classes, pretrained or checkpoint is not None)
    if not pretrained and checkpoint is None and num_classes is None:
        # Fresh weights need no download, so no label map to size a head: the encoder alone, the same
        # offline or online (a head sized by whatever happens to be cached would change what model() returns).
        return_features_only = True
    return build_model(name, pretrained=pretrained, checkpoint=checkpoint, return_features_only=return_features_only,
                       device=device, revision=revision, progress=progress, num_classes=num_classes, **kwargs)


@_documented
def esp_aves2_sl_beats_all(*, pretrained: bool = True, checkpoint: str | os.PathLike | None = None,
                           return_features_only: bool = False, device: str | torch.device | None = None,
                           revision: str | None = None, progress: bool = True, num_classes: int | None = None,
        **kwargs) -> AvexModel:
    """esp-aves2-sl-beats-all: BEATs post-trained on Xeno-canto, iNaturalist, Watkins, ASA, AudioSet; species head."""
    return _published_model("esp_aves2_sl_beats_all", pretrained=pretrained, checkpoint=checkpoint,
                            return_features_only=return_features_only, device=device, revision=revision,
                            progress=progress, num_classes=num_classes, **kwargs)


@_documented
def esp_aves2_sl_beats_bio(*, pretrained: bool = True, checkpoint: str | os.PathLike | None = None,
                           return_features_only: bool = False, device: str | torch.device | None = None,
                           revision: str | None = None, progress: bool = True, num_classes: int | None = None,
        **kwargs) -> AvexModel:
    """esp-aves2-sl-beats-bio: BEATs post-trained on the bioacoustic sources only, with its species head."""
    return _published_model("esp_aves2_sl_beats_bio", pretrained=pretrained, checkpoint=checkpoint,
                            return_features_only=return_features_only, device=device, revision=revision,
                            progress=progress, num_classes=num_classes, **kwargs)


@_documented
def esp_aves2_naturelm_audio_v1_beats(*, pretrained: bool = True, checkpoint: str | os.PathLike | None = None,
                                      return_features_only: bool = False, device: str | torch.device | None = None,
                                      revision: str | None = None, progress: bool = True, num_classes: int | None = None,
        **kwargs) -> AvexModel:
    """esp-aves2-naturelm-audio-v1-beats: the BEATs encoder of NatureLM-audio v1 (encoder only, no species head)."""
    return _published_model("esp_aves2_naturelm_audio_v1_beats", pretrained=pretrained, checkpoint=checkpoint,
                            return_features_only=return_features_only, device=device, revision=revision,
                            progress=progress, num_classes=num_classes, **kwargs)


def label_map(model: str = "esp_aves2_sl_beats_all", *, checkpoint: str | os.PathLike | None = None,
              revision: str | None = None) -> LabelMap:
    """The species label map (index <-> scientific name) of a model, from the Hub or ``checkpoint``."""
    return load_label_map(model, revision=revision, checkpoint=checkpoint)


def linear_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """A linear probe on a (frozen) backbone: ``probe(audio) -> [batch, num_classes]``; see avex_hub.heads.probes."""
    from .heads.probes import linear_probe as build

    return build(backbone, num_classes, **kwargs)


def mlp_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """A two-layer MLP probe on a (frozen) backbone; see avex_hub.heads.probes."""
    from .heads.probes import mlp_probe as build

    return build(backbone, num_classes, **kwargs)


def attention_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """An attention-pooling probe over the backbone's frames; see avex_hub.heads.probes."""
    from .heads.probes import attention_probe as build

    return build(backbone, num_classes, **kwargs)


def load_probe(path: str | os.PathLike, backbone: AvexModel | None = None, *,
               checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None,
               revision: str | None = None, progress: bool = True, embeddings_only: bool = False,
               allow_backbone_mismatch: bool = False) -> nn.Module:
    """A saved probe on the backbone it was trained on (built from its provenance unless given), verified.

    Args:
        path: a ``.safetensors`` file written by ``avex_hub.heads.probes.save_probe``.
        backbone: the model to put it on; None builds the one recorded in the probe's provenance (the
            published weights, or ``checkpoint``) and checks it against the recorded weights digest,
            architecture and preprocessing (a ProvenanceMismatchError names both sides of a difference).
        checkpoint: local weights for that backbone (needed when the probe was trained on local weights).
        device, revision, progress: as for the model entry points.
        embeddings_only: no backbone at all: a head for precomputed embeddings (``forward_embeddings``).
        allow_backbone_mismatch: load onto a mismatching backbone with a warning instead of an error.
    """
    from .heads.probes import load_probe as load
    from .hub.provenance import read_probe_metadata

    _check_device(device)
    if backbone is None and not embeddings_only:
        provenance = read_probe_metadata(path)["provenance"]
        if provenance.backbone_sha256 is None:
            raise ValueError(f"{path} was trained on fresh {provenance.backbone_name} weights (no digest), which "
                             "cannot be rebuilt; pass backbone=<that model> and allow_backbone_mismatch=True")
        if checkpoint is None and not provenance.published:
            raise ValueError(f"{path} was trained on local {provenance.backbone_name} weights (SHA-256 "
                             f"{provenance.backbone_sha256}), not the published ones; pass checkpoint=<the folder "
                             "or .safetensors file holding them>, or backbone=<that model>")
        backbone = build_model(provenance.backbone_name, checkpoint=checkpoint, device=device, revision=revision,
                               progress=progress)
    probe = load(path, None if embeddings_only else backbone, allow_backbone_mismatch=allow_backbone_mismatch)
    return probe.to(device) if device is not None else probe
