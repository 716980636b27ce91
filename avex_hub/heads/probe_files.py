"""Probe files: :func:`save_probe` writes a probe's head (and a fine-tuned backbone) with its config and
provenance, :func:`load_probe` rebuilds it on a backbone that matches, checking the file before anything is
allocated. Both are imported from :mod:`avex_hub.heads.probes`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from ..encoder.model import AvexModel
from .probe_module import Probe, check_backbone

__all__ = ["save_probe", "load_probe"]


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
        check_backbone(model)
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
        check_backbone(backbone)
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
