"""Provenance of probes and fine-tuned heads: which backbone, which input contract, which labels, how good.

A head only means something on the backbone and preprocessing it was trained with: the same weights fed
differently (clipped input, another normalisation) or other weights of the same size give other embeddings,
and the head then returns confident nonsense. So a saved head carries a :class:`Provenance`:

- ``backbone_name`` and ``backbone_sha256``: the registry name and the SHA-256 of the weights file the backbone
  was loaded from (``AvexModel.weights_sha256``; None for fresh weights, see below);
- ``backbone_config`` / ``backbone_config_sha256``: the architecture (BEATs config fields that change what the
  encoder computes in eval mode; dropout rates, layer drop, the unused AudioSet predictor and the filterbank
  statistics, which ``preprocessing`` records as used, are left out), so an architecture change is caught even
  when no weights digest exists;
- ``preprocessing``: the input contract (sample rate, filterbank mean/std, input scale, clipping, window);
- ``layers`` and ``pooling``: which hidden states and how frames were pooled;
- ``label_names`` (the label map, in index order) and ``metrics`` (e.g. the validation metric of training);
- ``created`` (UTC), ``avex_hub_version``, ``format_version`` and ``kind`` (``"probe"``, ``"fine-tuned probe"``,
  ``"fine-tuned export"``).

:meth:`Provenance.check_compatible` raises :class:`ProvenanceMismatchError` (a ValueError) listing every
difference with both values and saying which backbone to load.

Fresh weights: a head trained on a backbone without a weights digest (``pretrained=False``, or a model built
by hand) records ``backbone_sha256=None``. Nothing can show that another backbone holds the same random weights,
so such a head loads onto no backbone unless ``allow_backbone_mismatch=True`` is passed (a warning).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from ..encoder.beats import PREPROCESSING_KEYS

__all__ = ["Provenance", "ProvenanceMismatchError", "ProvenanceWarning", "FORMAT_VERSION", "architecture",
           "config_digest", "metrics_dict", "provenance_for_export", "check_export_provenance", "read_probe_metadata",
           "KINDS", "PROBE_META_KEY"]

FORMAT_VERSION = 1
PROBE_META_KEY = "avex_hub_probe"  # safetensors header key of a saved probe: the JSON of its <path>.json
KINDS = ("probe", "fine-tuned probe", "fine-tuned export")
# BEATs config fields that do not change the encoder's eval-mode output (training-time regularisation, the
# AudioSet predictor no head here uses), or that `preprocessing` records as actually used (fbank statistics).
NOT_ARCHITECTURE = frozenset({"dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                              "dropout_input", "predictor_dropout", "layer_wise_gradient_decay_ratio",
                              "finetuned_model", "predictor_class", "fbank_mean", "fbank_std"})


class ProvenanceMismatchError(ValueError):
    """A head loaded onto a backbone or input contract other than the one it was trained with.

    ``differences`` lists one line per difference, each naming the recorded and the found value.
    """

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


class ProvenanceWarning(UserWarning):
    """A head was loaded onto a mismatching backbone because ``allow_backbone_mismatch=True`` was passed."""


def architecture(config) -> dict:
    """The architecture part of a BEATsConfig (see ``NOT_ARCHITECTURE``) as a plain dict."""
    return {k: v for k, v in sorted(config.to_dict().items()) if k not in NOT_ARCHITECTURE}


def _digest(data: Mapping) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _without_preprocessing_copies(recorded: Mapping, digest: str) -> dict:
    """A backbone config recorded before ``BEATsConfig`` dropped its copy of the preprocessing
    (``sample_frequency``; the preprocessing block records the rate), as it is recorded now: the key left out and
    the digest recomputed, so heads and archives written before compare equal. An edited record is kept as is."""
    if not any(k in recorded for k in PREPROCESSING_KEYS) or _digest(recorded) != digest:
        return {}
    current = {k: v for k, v in recorded.items() if k not in PREPROCESSING_KEYS}
    return {"backbone_config": current, "backbone_config_sha256": _digest(current)}


def config_digest(config) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of ``architecture(config)``."""
    return _digest(architecture(config))


def metrics_dict(metrics) -> dict:
    """A TrainResult (see avex_hub.heads.training) or a mapping -> a JSON-serialisable dict of metrics.

    A TrainResult gives ``metric`` (accuracy or mAP), ``value`` (its best value), ``split`` ("val", or "train"
    when training had no validation), ``best_epoch``, ``epochs``, ``mode``, ``stopped_early`` and ``loss``.
    """
    if metrics is None:
        return {}
    if hasattr(metrics, "best_metric") and hasattr(metrics, "history"):
        best = metrics.history[metrics.best_epoch - 1] if metrics.history else {}
        validated = best.get("val_metric") is not None
        loss = best.get("val_loss" if validated else "train_loss")
        metrics = {"metric": metrics.metric_name, "value": float(metrics.best_metric),
                   "split": "val" if validated else "train", "best_epoch": int(metrics.best_epoch),
                   "epochs": len(metrics.history), "mode": metrics.mode, "stopped_early": bool(metrics.stopped_early),
                   "loss": None if loss is None else float(loss)}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a TrainResult (from train_probe) or a dict such as "
                        f"{{'val_accuracy': 0.91}}, got {type(metrics).__name__}")
    # 0-d tensors and numpy scalars (Lightning's callback_metrics, sklearn scores) become Python numbers.
    out = {str(k): v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else v for k, v in metrics.items()}
    try:
        json.dumps(out)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metrics must be JSON-serialisable (numbers, strings, lists, dicts): {error}") from None
    return out


def _published_digest(name: str) -> str | None:
    from .weights import get_weights

    try:
        return get_weights(name).sha256
    except ValueError:
        return None


def _short(value) -> str:
    return "none (fresh or unverified weights: no file digest)" if value is None else str(value)


@dataclass(frozen=True)
class Provenance:
    """What a saved head was trained on; see the module docstring for the fields."""

    backbone_name: str
    backbone_sha256: str | None
    backbone_config_sha256: str
    backbone_config: dict
    preprocessing: dict
    layers: tuple[int, ...]
    pooling: str
    label_names: tuple[str, ...] | None = None
    metrics: dict = field(default_factory=dict)
    kind: str = "probe"
    created: str = ""
    avex_hub_version: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_model(cls, model, *, layers: Sequence[int], pooling: str, label_names: Sequence[str] | None = None,
                   metrics=None, kind: str = "probe") -> "Provenance":
        """The provenance of a head on ``model`` (an AvexModel) reading hidden states ``layers`` (indices)."""
        from .._version import __version__

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        layers = tuple(int(i) for i in layers)
        bad = [i for i in layers if not 0 <= i <= model.num_layers]
        if not layers or bad:
            raise ValueError(f"layers {list(layers)} must be indices 0..{model.num_layers} of {model.name}'s "
                             "hidden states (resolve 'last'/'all'/negative ones with model.layer_indices)")
        return cls(backbone_name=model.name, backbone_sha256=model.weights_sha256,
                   backbone_config_sha256=config_digest(model.config), backbone_config=architecture(model.config),
                   preprocessing=model.preprocessing.to_dict(), layers=layers, pooling=str(pooling),
                   label_names=tuple(label_names) if label_names is not None else None,
                   metrics=metrics_dict(metrics), kind=kind,
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"), avex_hub_version=__version__)

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["layers"] = list(self.layers)
        out["label_names"] = list(self.label_names) if self.label_names is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "provenance") -> "Provenance":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a provenance dict, got {type(data).__name__}")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{source}: provenance format {version!r} is not one this avex_hub "
                             f"(format {FORMAT_VERSION}) reads; upgrade avex-hub (pip install -U avex-hub)")
        known = {f.name for f in fields(cls)}
        required = {"backbone_name", "backbone_sha256", "backbone_config_sha256", "backbone_config",
                    "preprocessing", "layers", "pooling"}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{source}: provenance lacks {missing}; the file is damaged or was edited by hand")
        values = {k: v for k, v in data.items() if k in known}
        _check_types(values, source)
        values.update(_without_preprocessing_copies(values["backbone_config"], values["backbone_config_sha256"]))
        values["layers"] = tuple(values["layers"])
        if values.get("label_names") is not None:
            values["label_names"] = tuple(values["label_names"])
        return cls(**values)

    # -- checks -------------------------------------------------------------------------------------------------
    @property
    def published(self) -> bool:
        """True when the recorded weights are the published weights of ``backbone_name``."""
        return self.backbone_sha256 is not None and self.backbone_sha256 == _published_digest(self.backbone_name)

    def how_to_load(self) -> str:
        """A sentence naming the backbone to load for this head."""
        if self.backbone_sha256 is None:
            return (f"it was trained on fresh (unverified) {self.backbone_name} weights, which no backbone can be "
                    "shown to match: retrain it on published or saved weights")
        if self.published:
            return f"load the backbone it was trained on: avex_hub.{self.backbone_name}() (the published weights)"
        return (f"load the backbone it was trained on: avex_hub.{self.backbone_name}(checkpoint=...) with the "
                f"weights file whose SHA-256 is {self.backbone_sha256}")

    def differences(self, model, *, layers=None, pooling: str | None = None) -> list[str]:
        """Every way ``model`` (and the given ``layers``/``pooling``) differs from what is recorded; [] if none."""
        out = []
        found = model.weights_sha256
        if self.backbone_sha256 is None:
            out.append(f"weights: the head was trained on {self.backbone_name} with no weights digest (fresh or "
                       f"unverified weights), so no backbone can be shown to match; this backbone ({model.name}) "
                       f"has sha256 {_short(found)}")
        elif found != self.backbone_sha256:
            out.append(f"weights: the head was trained on {self.backbone_name} sha256 {self.backbone_sha256}; this "
                       f"backbone ({model.name}) has sha256 {_short(found)}")
        ours = architecture(model.config)
        if config_digest(model.config) != self.backbone_config_sha256:
            changed = [f"config.{k}: head {self.backbone_config.get(k, '(absent)')!r}, backbone "
                       f"{ours.get(k, '(absent)')!r}" for k in sorted(set(ours) | set(self.backbone_config))
                       if self.backbone_config.get(k, "(absent)") != ours.get(k, "(absent)")]
            out += changed or [f"config: digest {self.backbone_config_sha256} recorded, {config_digest(model.config)} "
                               "found (the recorded config was edited)"]
        pre = model.preprocessing.to_dict()
        for key in sorted(set(pre) | set(self.preprocessing)):
            a, b = self.preprocessing.get(key, "(absent)"), pre.get(key, "(absent)")
            if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-9)):
                out.append(f"preprocessing.{key}: head {a!r}, backbone {b!r}")
        beyond = [i for i in self.layers if i > model.num_layers]
        if beyond:
            out.append(f"layers: the head reads hidden states {list(self.layers)}, but this backbone has "
                       f"0..{model.num_layers}")
        if layers is not None and not beyond:
            given = model.layer_indices(layers)
            if given != list(self.layers):
                out.append(f"layers: the head was trained on hidden states {list(self.layers)}, given {list(given)}")
        if pooling is not None and pooling != self.pooling:
            out.append(f"pooling: the head was trained on {self.pooling!r} pooling, given {pooling!r}")
        return out

    def check_compatible(self, model, *, layers=None, pooling: str | None = None, source: str | None = None) -> None:
        """Raise ProvenanceMismatchError naming both sides of every difference (see :meth:`differences`)."""
        diffs = self.differences(model, layers=layers, pooling=pooling)
        if diffs:
            where = f"{source}: " if source else ""
            raise ProvenanceMismatchError(
                f"{where}this {self.kind} does not fit the backbone it is being used with "
                f"({len(diffs)} difference{'s' if len(diffs) > 1 else ''}):\n  - " + "\n  - ".join(diffs)
                + f"\nTo fix: {self.how_to_load()}; or pass allow_backbone_mismatch=True to load it anyway (with a "
                "warning: its outputs are then not the ones it was validated with).", diffs)


_TYPES = {"backbone_name": str, "backbone_sha256": (str, type(None)), "backbone_config_sha256": str,
          "backbone_config": dict, "preprocessing": dict, "layers": list, "pooling": str,
          "label_names": (list, type(None)), "metrics": dict, "kind": str, "created": str, "avex_hub_version": str}


def _check_types(values: Mapping, source: str) -> None:
    """Each provenance field has its JSON type (a ValueError names the file and the field)."""
    for name, kind in _TYPES.items():
        value = values.get(name)
        if name not in values:
            continue
        ok = isinstance(value, kind)
        if ok and name == "layers":
            ok = bool(value) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        if ok and name == "label_names" and value is not None:
            ok = all(isinstance(n, str) for n in value)
        if ok and name == "kind":
            ok = value in KINDS
        if not ok:
            expected = KINDS if name == "kind" else "non-negative layer indices" if name == "layers" else kind
            raise ValueError(f"{source}: provenance field {name} is malformed ({value!r:.80}); expected {expected}; "
                             "the file is damaged or was edited by hand")


# -- fine-tuned exports (config.json of a whole model) ------------------------------------------------------------
def provenance_for_export(model, label_names: Sequence[str] | None = None, metrics=None) -> dict:
    """The ``"avex_hub"`` block for the ``config.json`` of a fine-tuned model export.

    ``model`` is the fine-tuned AvexModel; ``backbone_*`` then describe the base it was fine-tuned from (its
    ``weights_sha256`` is still the base file's digest), ``layers``/``pooling`` the species head's input (the
    last layer, mean pooled), ``label_names`` the new head's labels (default: ``model.labels``).
    """
    names = list(label_names) if label_names is not None else list(model.labels) or None
    return Provenance.from_model(model, layers=[model.num_layers], pooling="mean", label_names=names,
                                 metrics=metrics, kind="fine-tuned export").to_dict()


def check_export_provenance(model, block: Mapping, *, source: str = "config.json") -> Provenance | None:
    """Check a loaded export against the ``"avex_hub"`` block of its config.json; returns the Provenance.

    A block without provenance (no ``format_version``: written before provenance existed) returns None.

    The export's own weights file is its identity (its digest becomes ``model.weights_sha256``); what can go
    wrong is a folder whose parts disagree: an architecture or preprocessing other than the base it recorded,
    or a label map other than the head's. Each raises ProvenanceMismatchError naming both values.
    """
    if isinstance(block, Mapping) and "format_version" not in block:
        return None
    prov = Provenance.from_dict(block, source=source)
    diffs = [d for d in prov.differences(model) if not d.startswith("weights:")]
    if prov.label_names is not None and tuple(prov.label_names) != tuple(model.labels):
        first = next((i for i, (a, b) in enumerate(zip(prov.label_names, model.labels)) if a != b),
                     min(len(prov.label_names), len(model.labels)))
        diffs.append(f"label map: config.json records {len(prov.label_names)} labels, label_map.json has "
                     f"{len(model.labels)}; first difference at index {first}")
    if diffs:
        raise ProvenanceMismatchError(
            f"{source}: the exported model's files disagree with the provenance recorded at export:\n  - "
            + "\n  - ".join(diffs) + "\nTo fix: re-export the model, or restore the config.json and "
            "label_map.json that were written with its weights.", diffs)
    return prov


# -- saved probes ---------------------------------------------------------------------------------------------------
def read_probe_metadata(path: str | os.PathLike) -> dict:
    """``{"config": ..., "provenance": Provenance}`` of a saved probe, without loading its tensors.

    The safetensors header is authoritative; ``<path>.json`` is read only when the header has no copy, and
    must agree with it when both exist.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    sidecar = Path(str(path) + ".json")
    if not path.is_file():
        raise FileNotFoundError(f"expected a probe at {path} (written by save_probe), found no such file")
    try:
        with safe_open(str(path), "pt") as f:
            header = (f.metadata() or {}).get(PROBE_META_KEY)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); save the probe again") from None
    side = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
    if header is None and side is None:
        raise FileNotFoundError(f"{path} carries no probe config and {sidecar} is missing; expected a file written "
                                "by save_probe")
    meta = _json_object(header, f"{path} (its header {PROBE_META_KEY!r})") if header is not None \
        else _json_object(side, str(sidecar))
    if header is not None and side is not None and _canonical(_json_object(side, str(sidecar))) != _canonical(meta):
        raise ValueError(f"{sidecar} disagrees with the config stored in {path}; the header of {path.name} is "
                         f"authoritative: delete or restore {sidecar.name}")
    if "provenance" not in meta or "config" not in meta:
        raise ValueError(f"{path} was saved without provenance (an older avex_hub); load it with that version and "
                         "save it again with save_probe")
    provenance = Provenance.from_dict(meta["provenance"], source=str(path))
    if provenance.kind not in ("probe", "fine-tuned probe"):
        raise ValueError(f"{path}: provenance kind {provenance.kind!r} is not a probe's ('probe' or 'fine-tuned "
                         "probe'); the file is damaged or was edited by hand")
    config = _current_config(meta["config"])
    _check_probe_config(config, provenance, str(path))
    return {"config": config, "provenance": provenance}


def _current_config(config):
    """A probe config under this version's names: files written before avex_hub said ``pooling`` for the probe's
    pooling name it ``aggregation``."""
    if isinstance(config, dict) and "aggregation" in config and "pooling" not in config:
        return {("pooling" if name == "aggregation" else name): value for name, value in config.items()}
    return config


def _json_object(text: str, source: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON ({error}); save the probe again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with config and provenance, found {type(data).__name__}")
    return data


_CONFIG_TYPES = {"num_classes": int, "layers": list, "embedding_dim": int, "pooling": str, "head": str,
                 "hidden_dim": int, "dropout": float, "num_heads": int, "freeze_backbone": bool, "multilabel": bool,
                 "learned_layer_weights": bool, "label_names": (list, type(None)), "seed": int}
_SIZES = ("num_classes", "embedding_dim", "hidden_dim", "num_heads")


def _check_probe_config(config, provenance, source: str) -> None:
    """A saved probe's config with every field's type checked and its agreement with the provenance."""
    if not isinstance(config, dict) or set(config) != set(_CONFIG_TYPES):
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{source}: the probe config must have the fields {sorted(_CONFIG_TYPES)}, found {found}; "
                         "the file is damaged or was edited by hand: save the probe again")
    for name, kind in _CONFIG_TYPES.items():
        value = config[name]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
              else isinstance(value, kind) and (kind is bool or not isinstance(value, bool)))
        if name in _SIZES and ok:
            ok = value > 0
        if name == "layers" and ok:
            ok = bool(value) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        if name == "label_names" and ok and value is not None:
            ok = all(isinstance(n, str) for n in value)
        if not ok:
            expected = ("a positive int" if name in _SIZES else "non-negative layer indices" if name == "layers"
                        else kind)
            raise ValueError(f"{source}: probe config field {name} is malformed ({value!r:.80}); expected {expected}")
    recorded = {"layers": list(provenance.layers), "pooling": provenance.pooling,
                "freeze_backbone": provenance.kind == "probe",
                "embedding_dim": provenance.backbone_config.get("encoder_embed_dim", config["embedding_dim"])}
    if provenance.label_names is not None:
        recorded["label_names"] = list(provenance.label_names)
    for name, value in recorded.items():
        if config[name] != value:
            raise ValueError(f"{source}: probe config field {name}={config[name]!r} disagrees with its provenance "
                             f"({value!r}{', kind ' + repr(provenance.kind) if name == 'freeze_backbone' else ''}); "
                             "the file was edited by hand: save the probe again")


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True)
