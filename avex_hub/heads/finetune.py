"""The pure-torch half of fine-tuning: which parameters train, at which learning rate, on which schedule, and how a
fine-tuned model is saved in the published layout. :mod:`avex_hub.integrations.lightning` builds the training loop on these.

    from avex_hub.heads.finetune import set_trainable, layerwise_param_groups, warmup_cosine, export_model
    set_trainable(model, unfreeze=4)                  # the top 4 transformer layers and the head train
    groups = layerwise_param_groups(model, lr=1e-4)  # layer_decay=LAYER_DECAY: 0.75 per layer down
    export_model(model, "my-finetune")               # model.safetensors + label_map.json + config.json
    avex_hub.esp_aves2_sl_beats_all(checkpoint="my-finetune")   # loads it back, same outputs

Depth of a parameter (``0 .. num_layers + 1``): 0 for the embedding stage (patch embedding, its layer norm and
projection, the position convolution, the encoder's input layer norm, and the relative position table, which
one module shared by every layer holds), ``i`` for transformer layer ``i`` (1-based), ``num_layers + 1`` for the
classifier head. The unused AudioSet ``predictor`` of some checkpoints never trains.
"""

from __future__ import annotations

import json
import math
import os
from numbers import Real
from pathlib import Path

import torch
from torch import nn

from ..encoder.model import AvexModel
from ..embed.outputs import atomic_path
from .train_options import check_count, check_rate

__all__ = ["parameter_depth", "lowest_trainable_depth", "set_trainable", "trainable_modules", "LAYER_DECAY",
           "layerwise_param_groups", "warmup_cosine", "warmup_cosine_scheduler", "check_schedule", "export_model",
           "EXPORT_FORMAT"]

EXPORT_FORMAT = "avex-hub-finetune/1"
_EMBEDDING_PREFIXES = ("backbone.patch_embedding.", "backbone.layer_norm.", "backbone.post_extract_proj.",
                       "backbone.encoder.pos_conv.", "backbone.encoder.layer_norm.")
_NO_DECAY_NAMES = ("original0", "grep_a", "relative_attention_bias")  # weight-norm gain, gate scale, table


def _model_of(obj) -> AvexModel:
    """An AvexModel, or a wrapper (AvexClassifier) holding one as ``.model``."""
    model = getattr(obj, "model", obj)
    if not isinstance(model, AvexModel):
        raise TypeError(f"expected an avex_hub.AvexModel or an AvexClassifier, got {type(obj).__name__}")
    return model


def parameter_depth(name: str, num_layers: int) -> int | None:
    """Depth of an AvexModel parameter name (see the module docstring); None for the unused predictor."""
    if name.startswith("classifier."):
        return num_layers + 1
    if name.startswith("backbone.predictor."):
        return None
    if ".relative_attention_bias." in name or name.startswith(_EMBEDDING_PREFIXES):
        return 0
    prefix = "backbone.encoder.layers."
    if name.startswith(prefix):
        return int(name[len(prefix):].split(".", 1)[0]) + 1
    raise ValueError(f"parameter {name!r} belongs to no known part of the model; is this an AvexModel?")


def _unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Each parameter once, under its first name (the shared relative position table appears under every
    layer's key in the state dict, but is one tensor that must enter the optimiser once)."""
    seen, out = set(), []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def lowest_trainable_depth(unfreeze: str | int, num_layers: int) -> int:
    """Lowest trainable depth for ``unfreeze``: "all" -> 0; N -> the top N layers (N = 0: the head only)."""
    if unfreeze == "all":
        return 0
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or not 0 <= unfreeze <= num_layers:
        raise ValueError(f"unfreeze must be 'all' or an int 0..{num_layers} (the top N transformer layers; 0 trains "
                         f"the head only), got {unfreeze!r}")
    return num_layers + 1 - unfreeze


def set_trainable(model, unfreeze: str | int = "all") -> list[str]:
    """Set ``requires_grad`` for full fine-tuning (``"all"``) or the top ``unfreeze`` layers plus the head.

    With N layers unfrozen the embedding stage stays frozen, including the shared relative position table
    (training it would change the frozen layers too). Returns the trainable parameter names.
    """
    model = _model_of(model)
    lowest = lowest_trainable_depth(unfreeze, model.num_layers)
    trainable = []
    for name, param in _unique_parameters(model):
        depth = parameter_depth(name, model.num_layers)
        param.requires_grad_(depth is not None and depth >= lowest)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def trainable_modules(model, unfreeze: str | int = "all") -> list[nn.Module]:
    """The submodules that run in train mode for ``unfreeze``; everything else stays in eval mode (no dropout or
    layer drop in frozen parts). ``"all"``: the whole model; N: the top N transformer layers and the head."""
    model = _model_of(model)
    if lowest_trainable_depth(unfreeze, model.num_layers) == 0:
        return [model]
    layers = list(model.backbone.encoder.layers)
    return layers[len(layers) - unfreeze:] + [model.classifier]


# The layer-wise learning-rate decay a fine-tune starts from. It is not the weights' published
# ``layer_wise_gradient_decay_ratio``: that ratio scales gradients inside the encoder (before every layer, as the
# reference BEATs does; see avex_hub.encoder.beats), which AdamW's per-parameter normalisation largely cancels, while a
# learning-rate decay of 0.6 would leave the embedding stage 0.6 ** 13 (0.1 %) of the rate.
LAYER_DECAY = 0.75


def layerwise_param_groups(model, *, lr: float, layer_decay: float | None = None, weight_decay: float = 0.01,
                           unfreeze: str | int | None = None) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay: ``lr * layer_decay ** (num_layers + 1 - depth)``
    (the head gets ``lr``, the embedding stage the lowest rate). ``layer_decay=None``: :data:`LAYER_DECAY`.

    Only parameters with ``requires_grad`` enter (after :func:`set_trainable`, or ``unfreeze`` to set it here).
    Biases, norms and other 1-D or scale parameters get no weight decay. Each group carries ``name``
    (``"depth3"``, ``"depth3_no_decay"``, ...) and ``depth``.
    """
    model = _model_of(model)
    layer_decay = LAYER_DECAY if layer_decay is None else layer_decay
    if not lr > 0 or not 0 < layer_decay <= 1 or weight_decay < 0:
        raise ValueError(f"need lr > 0, 0 < layer_decay <= 1 and weight_decay >= 0; got lr={lr}, "
                         f"layer_decay={layer_decay}, weight_decay={weight_decay}")
    if unfreeze is not None:
        set_trainable(model, unfreeze)
    top = model.num_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in _unique_parameters(model):
        depth = parameter_depth(name, model.num_layers)
        if depth is None or not param.requires_grad:
            continue
        no_decay = param.dim() <= 1 or name.endswith(".bias") or any(n in name for n in _NO_DECAY_NAMES)
        key = (depth, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * layer_decay ** (top - depth),
                           "weight_decay": 0.0 if no_decay else weight_decay,
                           "name": f"depth{depth}{'_no_decay' if no_decay else ''}", "depth": depth}
        groups[key]["params"].append(param)
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    return [groups[key] for key in sorted(groups)]


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """LR multiplier after ``step`` optimiser steps: linear warm-up over ``warmup_steps`` (``(step + 1) /
    warmup_steps``), then cosine decay from 1 to ``min_lr_ratio`` at ``total_steps`` (constant after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_schedule(*, lr, warmup_steps, warmup_fraction, total_steps, min_lr_ratio, layerdrop, seed) -> None:
    """ValueError naming the first fine-tuning option out of range (those of
    :class:`avex_hub.integrations.lightning.AvexClassifier`), checked before anything runs."""
    check_rate("lr", lr)
    check_count("seed", seed, 0)
    if warmup_steps is not None:
        check_count("warmup_steps", warmup_steps, 0)
    if total_steps is not None:  # None: the trainer's estimate (0 is not a way to ask for it)
        check_count("total_steps", total_steps, 1)
    for name, value in (("warmup_fraction", warmup_fraction), ("min_lr_ratio", min_lr_ratio)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {name}={value!r}")
    if layerdrop is not None and (isinstance(layerdrop, bool) or not isinstance(layerdrop, Real)
                                  or not 0.0 <= layerdrop < 1.0):
        raise ValueError(f"layerdrop must be in [0, 1) (the chance a layer is skipped in a training step) or None "
                         f"(the config's), got layerdrop={layerdrop!r}")


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                            min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`warmup_cosine` to every group; step it once per optimiser step."""
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"need warmup_steps >= 0, total_steps >= 1, 0 <= min_lr_ratio <= 1; got {warmup_steps}, "
                         f"{total_steps}, {min_lr_ratio}")
    schedule = _Schedule(warmup_steps, total_steps, min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class _Schedule:
    """Picklable callable for LambdaLR (a lambda or closure would not pickle into a checkpoint)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                             min_lr_ratio=self.min_lr_ratio)


# -- export in the published layout ----------------------------------------------------------------------------------
_OURS = ("model.safetensors", "label_map.json", "config.json")


def export_model(model, folder: str | os.PathLike, *, overwrite: bool = False, metrics=None) -> dict[str, Path]:
    """Save a (fine-tuned) model as ``model.safetensors`` + ``label_map.json`` + ``config.json`` in ``folder``.

    The weights use the published keys (``backbone.*``, ``classifier.*``; the position convolution as
    ``parametrizations.weight.original0/1``; the shared relative position table under every layer's key), so
    ``avex_hub.esp_aves2_sl_beats_all(checkpoint=folder)`` and ``torch.hub.load(..., checkpoint=folder)`` rebuild
    it with identical outputs. ``config.json`` holds the BEATs config names plus ``preprocessing`` and an
    ``avex_hub`` provenance object (base model and weights digest, architecture, preprocessing, labels and
    ``metrics``, a dict or a TrainResult), checked when the export is loaded. Each file is written atomically. A folder
    that already holds an export is refused unless ``overwrite``; files of other names are never touched.
    Returns the written paths by name (``weights``, ``label_map`` (absent for an encoder), ``config``).
    """
    from safetensors.torch import save_file

    from ..hub.provenance import provenance_for_export

    model = _model_of(model)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; export_model writes a folder")
    existing = [name for name in _OURS if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {existing}; pass overwrite=True to replace them or choose a "
                              "new folder")
    others = sorted(p.name for p in folder.glob("*.safetensors") if p.name != "model.safetensors") \
        if folder.is_dir() else []
    if others:
        raise ValueError(f"{folder} holds other weights files {others}; checkpoint= would not know which to load. "
                         "Export into an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    # One contiguous CPU copy per key: safetensors refuses tensors sharing memory (the shared position table).
    state = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in model.state_dict().items()}
    config = {**model.config.to_dict(), "preprocessing": model.preprocessing.to_dict(),
              "avex_hub": {"format": EXPORT_FORMAT, **provenance_for_export(model, metrics=metrics)}}
    paths = {"weights": folder / "model.safetensors", "config": folder / "config.json"}
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if model.label_map is not None:
        paths["label_map"] = folder / "label_map.json"
        with atomic_path(paths["label_map"]) as tmp:
            model.label_map.to_json(tmp)
    elif (folder / "label_map.json").exists():
        (folder / "label_map.json").unlink()  # a previous export's head; this model has none (overwrite=True)
    with atomic_path(paths["weights"]) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "avex_hub": EXPORT_FORMAT})
    return paths
