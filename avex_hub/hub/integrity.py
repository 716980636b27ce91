"""Integrity checks on files before they become a model: sizes, dtypes, values and content addresses.

Everything here reads headers and bytes; nothing builds a model. The order in which loaders use it:

1. ``tensor_header`` reads the names, dtypes and shapes of a ``.safetensors`` file (its JSON header only);
2. ``check_config`` checks a BEATs config's values (types, signs, bounds) and compares every size that
   decides an allocation with the tensor shapes in that header, so an absurd ``config.json`` is refused
   before a single layer is built;
3. ``check_float_dtypes`` / ``check_finite`` refuse integer, bool, NaN or infinite weights by name;
4. ``cached_file_address`` / ``verify_cached_file`` check a file in the Hugging Face cache against the
   content address the Hub gave it (its blob name): the git blob SHA-1 of a small (non-LFS) file, the
   SHA-256 of an LFS file; ``ChecksumError`` names the file, the expected and the found digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from pathlib import Path

import torch

from ..encoder.beats import PREPROCESSING_KEYS, BEATsConfig

__all__ = ["tensor_header", "check_float_dtypes", "check_finite", "check_config", "check_config_values",
           "check_preprocessing", "git_blob_sha1", "cached_file_address", "verify_cached_file",
           "ChecksumError"]


class ChecksumError(ValueError):
    """A file whose digest is not the published (pinned) one or not the content address it is cached under."""


# -- safetensors headers -------------------------------------------------------------------------------------
def tensor_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a ``.safetensors`` file, read from its header (no tensor is loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); re-download or re-export it") from None


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def check_float_dtypes(header: dict[str, tuple[str, tuple[int, ...]]], source: str) -> None:
    """Refuse tensors that are not floating point (weights stored as int or bool load as nonsense)."""
    bad = [f"{k} ({dtype})" for k, (dtype, _) in sorted(header.items()) if dtype not in _FLOAT_DTYPES]
    if bad:
        raise ValueError(f"{source}: expected floating-point weights ({', '.join(_FLOAT_DTYPES)}), found "
                         f"{len(bad)} tensor(s) of another dtype: {bad[:5]}; the file is damaged or not weights")


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse tensors holding NaN or infinite values (they turn every score into NaN)."""
    bad = [k for k, v in sorted(state.items()) if v.is_floating_point() and not _finite(v)]
    if bad:
        raise ValueError(f"{source}: expected finite weights, found NaN or infinite values in {len(bad)} "
                         f"tensor(s): {bad[:5]}; the file is damaged: download or export it again")


def _finite(tensor: torch.Tensor) -> bool:
    # min and max propagate NaN and show infinities: one pass without a [numel] bool mask (8x faster than
    # isfinite(t).all() on the 91M weights: 60 ms, 1 thread)
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(low.isfinite() & high.isfinite())


# -- BEATs config against the weights ------------------------------------------------------------------------
# Sizes that decide what is allocated and that no tensor shape shows: bounded generously (the published
# models use 128 mel bins, 25 ms frames every 10 ms).
_BOUNDS = {"num_mel_bins": 1024, "frame_length": 1000.0, "frame_shift": 1000.0, "max_distance": 10**6,
           "sample_frequency": 384_000.0}
_ANY_SIGN = ("fbank_mean",)  # a log-mel mean
# Fractions (the fields that may be 0), each with its range: dropouts and layer drop are probabilities of dropping
# in train mode, where 1 would drop everything (so [0, 1)); the gradient ratio scales the gradient entering each
# layer, 1 passing it unscaled and 0 stopping it (so [0, 1]).
_FRACTIONS = {"dropout": "[0, 1)", "attention_dropout": "[0, 1)", "activation_dropout": "[0, 1)",
              "encoder_layerdrop": "[0, 1)", "dropout_input": "[0, 1)", "predictor_dropout": "[0, 1)",
              "layer_wise_gradient_decay_ratio": "[0, 1]"}


def check_config_values(values: dict, source: str) -> None:
    """Types (bool is not int), signs, bounds and the ranges of fractions (dropouts, layer drop) of every BEATs
    config field in ``values`` (a dict, e.g. a ``config.json`` merged over defaults), each error naming the field;
    then the config's own rules. The reference's copies of the preprocessing (``PREPROCESSING_KEYS``, numbers) are
    checked too where present."""
    specs = [(f.name, type(f.default)) for f in dataclasses.fields(BEATsConfig)]
    specs += [(name, float) for name in PREPROCESSING_KEYS]
    for name, kind in specs:
        if name not in values:
            continue
        value = values[name]
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, int) and not isinstance(value, bool) if kind is int else
              isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              if kind is float else isinstance(value, kind))
        if not ok:
            expected = {bool: "true or false", int: "an int", float: "a finite number"}.get(kind, kind.__name__)
            raise ValueError(f"{source}: config field {name} must be {expected}, found {value!r} "
                             f"({type(value).__name__})")
        if kind in (int, float) and name not in (*_FRACTIONS, *_ANY_SIGN) and value <= 0:
            raise ValueError(f"{source}: config field {name} must be positive, found {value!r}")
        if kind in (int, float) and name not in _ANY_SIGN and value < 0:
            raise ValueError(f"{source}: config field {name} must not be negative, found {value!r}")
        if name in _FRACTIONS and not (0 <= value < 1 or value == 1 and _FRACTIONS[name].endswith("]")):
            raise ValueError(f"{source}: config field {name} must lie in {_FRACTIONS[name]}, found {value!r}")
        if name in _BOUNDS and value > _BOUNDS[name]:
            raise ValueError(f"{source}: config field {name}={value!r} is beyond any BEATs model (at most "
                             f"{_BOUNDS[name]}); the config is damaged")
    try:
        BEATsConfig(**{k: v for k, v in values.items() if k in _FIELDS}).validate()
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


_FIELDS = frozenset(f.name for f in dataclasses.fields(BEATsConfig))


_PREFIX = re.compile(r"^((module|model|backbone)\.)+")


def _expected_shapes(config: BEATsConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{bare BEATs key (layer 0): (shape, the config fields that size it)}``: pins every size to the weights."""
    c, p, heads = config.encoder_embed_dim, config.input_patch_size, config.encoder_attention_heads
    pos_conv = ((c, c // config.conv_pos_groups, config.conv_pos), "encoder_embed_dim, conv_pos_groups, conv_pos")
    shapes = {"patch_embedding.weight": ((config.embed_dim, 1, p, p), "embed_dim, input_patch_size"),
              "encoder.layers.0.self_attn.q_proj.weight": ((c, c), "encoder_embed_dim"),
              "encoder.layers.0.fc1.weight": ((config.encoder_ffn_embed_dim, c),
                                              "encoder_ffn_embed_dim, encoder_embed_dim"),
              "encoder.pos_conv.0.parametrizations.weight.original1": pos_conv,
              "encoder.pos_conv.0.weight_v": pos_conv}
    if config.relative_position_embedding:
        shapes["encoder.layers.0.self_attn.relative_attention_bias.weight"] = (
            (config.num_buckets, heads), "num_buckets, encoder_attention_heads")
    if config.gru_rel_pos:
        shapes["encoder.layers.0.self_attn.grep_a"] = ((1, heads, 1, 1), "encoder_attention_heads")
    return shapes


def check_config(config: BEATsConfig, header: dict[str, tuple[str, tuple[int, ...]]], source: str) -> None:
    """Refuse a config whose values are malformed or whose sizes disagree with the weights' shapes.

    Runs before the model is built, so a damaged ``config.json`` (10 000 layers, a 10^6-wide embedding)
    costs a header read, not gigabytes. ``header`` is :func:`tensor_header` of the weights file.
    """
    check_config_values(config.to_dict(), source)
    bare = {_PREFIX.sub("", k): shape for k, (_, shape) in header.items()}
    layers = {int(m.group(1)) for k in bare if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if not layers:
        raise ValueError(f"{source} holds no encoder.layers.* tensors (found {sorted(header)[:5]} ...); expected a "
                         "BEATs checkpoint in the published layout (backbone.*, classifier.*)")
    if len(layers) != config.encoder_layers:
        raise ValueError(f"{source}: config encoder_layers={config.encoder_layers} but the weights hold "
                         f"{len(layers)} layers; use the config.json saved with these weights")
    wrong = [f"config {fields} give {k} the shape {shape}, the weights hold {bare[k]}"
             for k, (shape, fields) in _expected_shapes(config).items() if k in bare and bare[k] != shape]
    if wrong:
        raise ValueError(f"{source}: the config's sizes disagree with the weights ({'; '.join(wrong)}); use the "
                         "config.json saved with these weights")


# -- content addresses in the Hugging Face cache ---------------------------------------------------------------
def _file_digest(path: str | os.PathLike, digest, chunk_size: int = 1 << 22) -> str:
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git blob SHA-1 of a file: ``sha1(b"blob <size>\\0" + data)``, the Hub's address of non-LFS files."""
    return _file_digest(path, hashlib.sha1(b"blob %d\0" % os.path.getsize(path)))


def cached_file_address(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(address, found)`` of a file in a Hugging Face cache snapshot, or None when it cannot be checked.

    The snapshot entry is a link to ``blobs/<address>``; the address is the git blob SHA-1 (40 hex digits,
    small files) or the SHA-256 (64 hex digits, LFS files) of the content. A plain file (a ``local_dir``
    copy, a folder copied without links) carries no address: None.
    """
    path = Path(path)
    if not path.is_symlink():
        return None
    blob = Path(os.path.realpath(path))
    address = blob.name
    if blob.parent.name != "blobs" or not blob.is_file() or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", address):
        return None
    found = git_blob_sha1(blob) if len(address) == 40 else _file_digest(blob, hashlib.sha256())
    return address, found


def verify_cached_file(path: str | os.PathLike, *, pinned_sha256: str | None = None, fix: str = "") -> str | None:
    """Check a cached file against its content address and, when given, a pinned SHA-256.

    Returns the address checked (None for a file without one, when only the pin can vouch for it);
    raises :class:`ChecksumError` naming the file, the expected and the found digest.
    """
    checked = cached_file_address(path)
    if checked is not None and checked[0] != checked[1]:
        raise ChecksumError(f"{path}: its content does not match the address the Hub gave it: expected "
                             f"{checked[0]}, found {checked[1]}. The cached file was changed or replaced; {fix}")
    if pinned_sha256 is not None:
        found = _file_digest(path, hashlib.sha256())
        if found != pinned_sha256:
            raise ChecksumError(f"{path}: SHA-256 {found} is not the pinned {pinned_sha256}; {fix}")
    return checked[0] if checked is not None else None


# -- the preprocessing contract against the config -------------------------------------------------------------
def check_preprocessing(preprocessing, stated: dict, source: str) -> None:
    """Refuse a malformed preprocessing contract, and config.json values it would silently override.

    The model normalises with ``preprocessing.fbank_mean/fbank_std`` at ``preprocessing.sample_rate``; a
    ``config.json`` whose BEATs ``fbank_mean``, ``fbank_std`` or ``sample_frequency`` (``PREPROCESSING_KEYS``,
    not kept in ``BEATsConfig``) say otherwise would be ignored without a word, so the disagreement is an error
    naming both values. ``stated``: the config.json's values (only these keys are read).
    """
    p = preprocessing
    for name in ("fbank_mean", "fbank_std", "input_scale", "window_s"):
        value = getattr(p, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{source}: preprocessing.{name} must be a finite number, found {value!r}")
        if name != "fbank_mean" and value <= 0:
            raise ValueError(f"{source}: preprocessing.{name} must be positive, found {value!r}")
    if isinstance(p.sample_rate, bool) or not isinstance(p.sample_rate, int) or p.sample_rate <= 0:
        raise ValueError(f"{source}: preprocessing.sample_rate must be a positive int, found {p.sample_rate!r}")
    if not isinstance(p.clip_input, bool):
        raise ValueError(f"{source}: preprocessing.clip_input must be true or false, found {p.clip_input!r}")
    for name, field in PREPROCESSING_KEYS.items():
        value = getattr(p, field)
        if name in stated and not math.isclose(stated[name], value, rel_tol=1e-6):
            raise ValueError(f"{source}: config field {name}={stated[name]!r} would be ignored: the model "
                             f"uses preprocessing.{field}={value!r}. "
                             "Make them equal (set the value under \"preprocessing\" in config.json to change it)")
