"""The builders behind ``hubconf.py`` and the package API; keyword-only, typed, documented."""

from __future__ import annotations

import os

import torch
from torch import nn

from .hub import build_model, load_label_map
from .labels import LabelMap
from .model import AvexModel
from .precision import resolve_device

__all__ = [
    "esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "esp_aves2_naturelm_audio_v1_beats",
    "label_map", "linear_probe", "mlp_probe", "attention_probe", "load_probe",
]

_ARGS = """
    Args:
        pretrained: load the published weights (downloaded once, SHA-256 verified); False gives
            the same architecture with fresh weights.
        checkpoint: a local ``.safetensors`` file, or a folder with it, ``label_map.json`` and
            optionally ``config.json``; used instead of the Hub (air-gapped machines, fine-tunes).
        return_features_only: ``model(audio)`` returns frame features ``[batch, frames, 768]``
            instead of species logits.
        device: where to put the model (``"cuda"``, ``"cpu"``, ...); default CPU.
        revision: a Hub branch, tag or commit of the weights repository.
        progress: show download progress bars.
"""


def _check_device(device: str | torch.device | None) -> None:
    """A device this torch cannot use (``"cuda"`` on a CPU-only build) is a ValueError now, before any download."""
    if device is not None:
        resolve_device(device)


def _builder(name: str, summary: str):
    def build(*, pretrained: bool = True, checkpoint: str | os.PathLike | None = None,
              return_features_only: bool = False, device: str | torch.device | None = None,
              revision: str | None = None, progress: bool = True, **kwargs) -> AvexModel:
        _check_device(device)
        return build_model(name, pretrained=pretrained, checkpoint=checkpoint,
                           return_features_only=return_features_only, device=device,
                           revision=revision, progress=progress, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = summary + "\n" + _ARGS
    return build


esp_aves2_sl_beats_all = _builder(
    "esp_aves2_sl_beats_all",
    "esp-aves2-sl-beats-all: BEATs post-trained on Xeno-canto, iNaturalist, Watkins, ASA and AudioSet, with its species head.")
esp_aves2_sl_beats_bio = _builder(
    "esp_aves2_sl_beats_bio",
    "esp-aves2-sl-beats-bio: BEATs post-trained on the bioacoustic sources only, with its species head.")
esp_aves2_naturelm_audio_v1_beats = _builder(
    "esp_aves2_naturelm_audio_v1_beats",
    "esp-aves2-naturelm-audio-v1-beats: the BEATs encoder of NatureLM-audio v1 (encoder only, no species head).")


def label_map(model: str = "esp_aves2_sl_beats_all", *, checkpoint: str | os.PathLike | None = None,
              revision: str | None = None) -> LabelMap:
    """The species label map (index <-> scientific name) of a model, from the Hub or ``checkpoint``."""
    return load_label_map(model, revision=revision, checkpoint=checkpoint)


def linear_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """A linear probe on a (frozen) backbone: ``probe(audio) -> [batch, num_classes]``; see avex_hub.probes."""
    from .probes import linear_probe as build

    return build(backbone, num_classes, **kwargs)


def mlp_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """A two-layer MLP probe on a (frozen) backbone; see avex_hub.probes."""
    from .probes import mlp_probe as build

    return build(backbone, num_classes, **kwargs)


def attention_probe(backbone: AvexModel, num_classes: int, **kwargs) -> nn.Module:
    """An attention-pooling probe over the backbone's frames; see avex_hub.probes."""
    from .probes import attention_probe as build

    return build(backbone, num_classes, **kwargs)


def load_probe(path: str | os.PathLike, backbone: AvexModel | None = None, *,
               checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None,
               revision: str | None = None, progress: bool = True, embeddings_only: bool = False,
               allow_backbone_mismatch: bool = False) -> nn.Module:
    """A saved probe on the backbone it was trained on (built from its provenance unless given), verified.

    Args:
        path: a ``.safetensors`` file written by ``avex_hub.probes.save_probe``.
        backbone: the model to put it on; None builds the one recorded in the probe's provenance (the
            published weights, or ``checkpoint``) and checks it against the recorded weights digest,
            architecture and preprocessing (a ProvenanceMismatchError names both sides of a difference).
        checkpoint: local weights for that backbone (needed when the probe was trained on local weights).
        device, revision, progress: as for the model entry points.
        embeddings_only: no backbone at all: a head for precomputed embeddings (``forward_embeddings``).
        allow_backbone_mismatch: load onto a mismatching backbone with a warning instead of an error.
    """
    from .probes import load_probe as load
    from .provenance import read_probe_metadata

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
