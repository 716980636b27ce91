"""Weights in: download (huggingface_hub) -> verify SHA-256 -> safetensors -> key normalisation -> strict load.

Nothing here unpickles: checkpoints are safetensors files, read as plain tensors.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import torch

from .._files import read_capped, unique_keys
from ..encoder.beats import BEATsConfig
from .integrity import (
    ChecksumError, check_config, check_config_values, check_finite, check_float_dtypes, check_preprocessing,
    tensor_header, verify_cached_file,
)
from ..labels import LabelMap
from ..encoder.model import AvexModel
from ..encoder.preprocessing import Preprocessing
from .weights import WeightsEntry, get_weights

__all__ = [
    "ChecksumError", "WeightsNotAvailableError", "build_model", "download_weights", "load_label_map",
    "normalize_state_dict", "sha256_file", "verify_file", "load_safetensors", "verify_label_map",
]


class WeightsNotAvailableError(FileNotFoundError):
    """The Hub cannot be reached (or is switched off) and the files are not cached."""


# Files whose digest this process has checked: real path -> (size, mtime_ns, sha256).
_VERIFIED: dict[str, tuple[int, int, str]] = {}


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 22, reread: bool = False) -> str:
    """The hex SHA-256 of a file, read in 4 MiB chunks; memoised per real path, size and mtime.

    ``reread=True`` reads the bytes again whatever this process remembers (``avex-hub verify``).
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    known = _VERIFIED.get(real)
    if not reread and known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
        return known[2]
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    _VERIFIED[real] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, expected_sha256: str, *, entry: WeightsEntry | None = None) -> str:
    """Refuse a file whose digest differs from ``expected_sha256``; returns the digest."""
    found = sha256_file(path)
    if found != expected_sha256:
        fix = (f"delete it and download again (`hf download {entry.repo_id} {entry.filename} --force-download`), "
               if entry is not None else "")
        raise ChecksumError(
            f"{path}: SHA-256 {found} does not match the published {expected_sha256}. The file is corrupt, "
            f"truncated or not the published weights; {fix}or pass your own file with checkpoint=."
        )
    return found


def _offline_message(entry: WeightsEntry, filename: str, cause: BaseException) -> str:
    from huggingface_hub import constants

    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    why = ("HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub could not be reached")
    files = " ".join(f for f in (entry.filename, entry.label_map_filename) if f)
    return (
        f"{entry.name}: {why} and {filename} is not in the local Hub cache "
        f"({constants.HF_HUB_CACHE}). On a machine with network, pre-download with\n"
        f"    hf download {entry.repo_id} {files}\n"
        f"(or `avex-hub download {entry.name}`) and copy the cache here, or download the files anywhere and "
        f"load them with checkpoint='/path/to/folder'. ({type(cause).__name__}: {cause})"
    )


def _hub_download(entry: WeightsEntry, filename: str, *, revision: str | None, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    kwargs: dict = {}
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # a bar that never draws, for progress=False
            def __init__(self, *args, **kw):
                kw["disable"] = True
                super().__init__(*args, **kw)

        kwargs["tqdm_class"] = _Silent
    try:
        return Path(hf_hub_download(entry.repo_id, filename, revision=revision or entry.revision, **kwargs))
    except LocalEntryNotFoundError as error:
        raise WeightsNotAvailableError(_offline_message(entry, filename, error)) from error
    except (HfHubHTTPError, OSError) as error:
        if isinstance(error, HfHubHTTPError) and getattr(error.response, "status_code", 0) in (401, 403, 404):
            raise
        raise WeightsNotAvailableError(_offline_message(entry, filename, error)) from error


def download_weights(name: str, *, revision: str | None = None, progress: bool = True) -> dict[str, Path]:
    """Fetch (or find in the Hub cache) a model's weights and label map and verify the weights.

    Returns ``{"weights": path, "label_map": path or absent}``. Respects ``HF_HOME`` and
    ``HF_HUB_OFFLINE``; raises :class:`WeightsNotAvailableError` offline with nothing cached and
    :class:`ChecksumError` when the weights are not the published file.
    """
    entry = get_weights(name)
    weights = _hub_download(entry, entry.filename, revision=revision, progress=progress)
    verify_file(weights, entry.sha256, entry=entry)
    files = {"weights": weights}
    if entry.label_map_filename:
        files["label_map"] = _hub_download(entry, entry.label_map_filename, revision=revision, progress=progress)
        verify_label_map(files["label_map"], entry)
    return files


def verify_label_map(path: str | os.PathLike, entry: WeightsEntry) -> str | None:
    """Check a cached label map against its Hub content address and the pinned ``entry.label_map_sha256``.

    A swapped or permuted label map renames every prediction, so it is checked like the weights. Returns the
    address checked, or None for a copy without one (a plain file, not a cache link: only the pin, when set,
    vouches for it). Raises :class:`ChecksumError` naming the file, the expected and the found digest.
    """
    fix = (f"delete it and download again (`hf download {entry.repo_id} {entry.label_map_filename} "
           "--force-download`), or pass your own folder with checkpoint=.")
    return verify_cached_file(path, pinned_sha256=entry.label_map_sha256, fix=fix)


def load_label_map(name: str = "esp_aves2_sl_beats_all", *, revision: str | None = None,
                   checkpoint: str | os.PathLike | None = None) -> LabelMap:
    """The species label map of a model, from ``checkpoint`` (folder or file) or the Hub."""
    if checkpoint is not None:
        path = Path(checkpoint)
        path = path if path.suffix == ".json" else (path if path.is_dir() else path.parent) / "label_map.json"
        return LabelMap.from_json(path)
    entry = get_weights(name)
    if not entry.label_map_filename:
        raise ValueError(f"{entry.name} is an encoder only and has no label map")
    path = _hub_download(entry, entry.label_map_filename, revision=revision, progress=False)
    verify_label_map(path, entry)
    return LabelMap.from_json(path)


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file; anything else is refused (we never unpickle)."""
    path = _check_safetensors_path(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); re-download or re-export it") from None


def _check_safetensors_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: only .safetensors checkpoints are accepted (pickled .pt/.ckpt/.bin files can run code "
            "when loaded); convert with safetensors.torch.save_file(state_dict, 'model.safetensors')"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    return path


def _read_weights(path: str | os.PathLike, config: BEATsConfig, preprocessing: Preprocessing,
                  stated: dict | None = None) -> dict:
    """The normalised state of a weights file, read only once its header agrees with ``config``.

    The config's sizes are checked against the tensor shapes (and the dtypes against floating point) before
    anything is loaded or built; the loaded values must be finite. ``stated``: a config.json's own values, whose
    copies of the preprocessing (``PREPROCESSING_KEYS``) must agree with ``preprocessing``.
    """
    source = str(_check_safetensors_path(path))
    header = tensor_header(path)
    check_float_dtypes(header, source)
    check_config(config, header, source)
    check_preprocessing(preprocessing, stated or {}, source)
    state = load_safetensors(path)
    check_finite(state, source)
    return normalize_state_dict(state)


# -- key normalisation: every accepted layout variant, in one tested function -----------------------
_PREFIXES = ("module.", "model.")
_FBANK_BUFFER = re.compile(r"^(backbone\.)?(fbank|filterbank)\.(window|mel_weights|mel_fb)$")
# Filterbank buffers a checkpoint may carry -> ours (KaldiFbank). avex 1.4.0's BEATs registers ``window`` [400] and
# ``mel_fb`` [257, mels] (frequency x mel, our ``mel_weights`` orientation) as persistent buffers; they are its only
# buffers, so its state dicts carry ``backbone.fbank.window`` and ``backbone.fbank.mel_fb``.
_FBANK_NAMES = {"window": "window", "mel_weights": "mel_weights", "mel_fb": "mel_weights"}
# Built in float32 by other code, avex's mel matrix differs from ours by up to 2.2e-5 (weights lie in [0, 1]); a
# filterbank with other settings (mels, frequency range, FFT size) differs by orders of magnitude more.
_FBANK_ATOL = 1e-4
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def normalize_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an accepted checkpoint layout onto this package's keys (the published layout).

    Accepted: the published ``backbone.*`` / ``classifier.*`` keys; a ``module.`` (DDP) or ``model.``
    (Lightning) prefix; bare BEATs keys of an encoder-only file (given a ``backbone.`` prefix); the
    position convolution's weight norm as ``weight_g``/``weight_v`` or ``parametrizations...original0/1``;
    filterbank buffers (``fbank.window``, ``fbank.mel_weights``, and avex's ``fbank.mel_fb``, with or without
    ``backbone.``), which are checked against ours and dropped. Anything else is left for the strict
    load to report.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        if _FBANK_BUFFER.match(key):
            _check_fbank_buffer(key, value)
            continue
        for old, new in _WEIGHT_NORM.items():
            if key.endswith("pos_conv.0." + old):
                key = key[: -len(old)] + new
        out[key] = value
    if not any(k.startswith("backbone.") for k in out) and "patch_embedding.weight" in out:
        out = {("backbone." + k if not k.startswith("classifier.") else k): v for k, v in out.items()}
    return out


def _check_fbank_buffer(key: str, value: torch.Tensor) -> None:
    from ..encoder.fbank import KaldiFbank

    ours = dict(KaldiFbank().named_buffers())[_FBANK_NAMES[key.rsplit(".", 1)[1]]]
    if value.shape != ours.shape or not torch.allclose(value.float(), ours, atol=_FBANK_ATOL):
        raise ValueError(
            f"checkpoint key {key!r} holds a filterbank buffer of shape {tuple(value.shape)} that differs from "
            f"this package's Kaldi filterbank {tuple(ours.shape)}; these weights expect other preprocessing"
        )


def _check_shared_tables(state: dict[str, torch.Tensor], num_layers: int) -> None:
    """The relative-position table is one tensor; refuse a checkpoint whose layer copies differ."""
    keys = [f"backbone.encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in range(num_layers)]
    present = [k for k in keys if k in state]
    if present and present[0] == keys[0]:
        for key in present[1:]:
            if not torch.equal(state[key], state[keys[0]]):
                raise ValueError(f"{key} differs from layer 0's table, but BEATs shares one table across layers")


def load_state_dict_strict(model: AvexModel, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a state in this package's layout (see :func:`normalize_state_dict`) with every key accounted for;
    the error lists missing and unexpected keys."""
    _check_shared_tables(state, model.config.encoder_layers)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the {model.name} architecture:\n"
            f"  missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}\n"
            "Expected the published layout (backbone.*, classifier.*); pass config.json for non-standard sizes."
        )
    ours = model.state_dict()
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
             for k, v in state.items() if v.shape != ours[k].shape]
    if wrong:
        raise ValueError(f"{source} has tensors of other sizes than {model.name}'s architecture: {wrong[:10]}; "
                         "put the matching config.json beside the weights")
    model.load_state_dict(state, strict=True)


# -- building a model --------------------------------------------------------------------------------
def resolve_checkpoint(checkpoint: str | os.PathLike, entry: WeightsEntry) -> dict[str, Path | None]:
    """``checkpoint=`` as a ``.safetensors`` file or a folder -> its weights, label map and config files."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        preferred = [p for p in candidates if p.name in (entry.filename, "model.safetensors")]
        if len(preferred) == 1 or len(candidates) == 1:
            weights = (preferred or candidates)[0]
        elif not candidates:
            raise FileNotFoundError(
                f"checkpoint folder {path} holds no .safetensors file; expected {entry.filename} or "
                "model.safetensors (with label_map.json and optionally config.json)"
            )
        else:
            raise ValueError(f"checkpoint folder {path} holds several weights files {[p.name for p in candidates]}; "
                             "pass the one to use as checkpoint='.../name.safetensors'")
        folder = path
    elif path.exists():
        weights, folder = path, path.parent
    else:
        raise FileNotFoundError(f"checkpoint not found: {path}; expected a .safetensors file or a folder holding one")
    label_map, config = folder / "label_map.json", folder / "config.json"
    # exists(), not is_file(): a config or label map that is a stream or device is refused when read, not ignored
    return {"weights": weights, "label_map": label_map if label_map.exists() else None,
            "config": config if config.exists() else None}


def _read_config(path: Path, base: BEATsConfig) -> tuple[BEATsConfig, Preprocessing | None, dict | None, dict]:
    """config.json -> the architecture, the preprocessing (if recorded), our exports' provenance block and the
    file's own values (for the preprocessing copies a reference config.json states, ``PREPROCESSING_KEYS``)."""
    try:
        text = read_capped(path, CONFIG_MAX_BYTES, what="a BEATs config.json").decode("utf-8")
        data = json.loads(text, object_pairs_hook=unique_keys(str(path)))  # a field given twice is refused
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); expected BEATs config fields") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of BEATs config fields, found {type(data).__name__}")
    preprocessing = data.pop("preprocessing", None)
    provenance = data.pop("avex_hub", None)  # written by avex_hub's own exports
    merged = {**base.to_dict(), **data}
    check_config_values(merged, str(path))  # before BEATsConfig's own checks divide by a size
    config = BEATsConfig.from_dict(merged)
    return config, (_read_preprocessing(preprocessing, path) if preprocessing else None), provenance, data


CONFIG_MAX_BYTES = 1 << 20  # a config.json is ~1 kB


def _read_preprocessing(block, path: Path) -> Preprocessing:
    known = set(Preprocessing.__dataclass_fields__)
    if not isinstance(block, dict) or set(block) - known:
        raise ValueError(f"{path}: \"preprocessing\" must be an object with fields {sorted(known)}, found "
                         f"{sorted(block) if isinstance(block, dict) else type(block).__name__}")
    return Preprocessing(**block)  # its values are checked with the config (integrity.check_preprocessing)


def build_model(name: str, *, pretrained: bool = True, checkpoint: str | os.PathLike | None = None,
                return_features_only: bool = False, device: str | torch.device | None = None,
                revision: str | None = None, progress: bool = True, num_classes: int | None = None) -> AvexModel:
    """Build a published model (see :mod:`avex_hub.hub.weights`) with verified weights, in eval mode."""
    entry = get_weights(name)
    config, preprocessing = entry.config, entry.preprocessing
    label_map: LabelMap | None = None
    state: dict[str, torch.Tensor] | None = None
    digest: str | None = None
    provenance: dict | None = None
    if checkpoint is not None:
        files = resolve_checkpoint(checkpoint, entry)
        if files["config"] is not None:
            config, custom, provenance, stated = _read_config(files["config"], config)
            preprocessing = custom or preprocessing
        else:
            stated = {}
        state = _read_weights(files["weights"], config, preprocessing, stated)
        digest = sha256_file(files["weights"])
        source = str(files["weights"])
        if files["label_map"] is not None:
            label_map = LabelMap.from_json(files["label_map"])
        elif "classifier.weight" in state and digest == entry.sha256:
            label_map = load_label_map(entry.name, revision=revision)  # the published file on its own
        elif "classifier.weight" in state:
            raise FileNotFoundError(f"{source} has a species head but no label_map.json beside it; put the "
                                    "label map ({\"name\": index}) in the same folder")
    elif pretrained:
        files = download_weights(entry.name, revision=revision, progress=progress)
        state = _read_weights(files["weights"], config, preprocessing)
        digest, source = entry.sha256, str(files["weights"])
        label_map = LabelMap.from_json(files["label_map"]) if "label_map" in files else None
    else:
        source = "fresh weights"
        if num_classes is not None:
            label_map = LabelMap.from_names([f"class_{i}" for i in range(num_classes)])
        elif entry.has_classifier and not return_features_only:
            label_map = _cached_label_map(entry, revision)
    if state is not None:
        config = _config_for_state(config, state)
        _check_head(state, label_map, source)
    model = AvexModel(config, label_map=label_map, preprocessing=preprocessing,
                      return_features_only=return_features_only, name=entry.name, weights_sha256=digest)
    if state is not None:
        load_state_dict_strict(model, state, source=source)
    if provenance is not None:  # an exported fine-tune: its parts must agree with what was recorded at export
        from .provenance import check_export_provenance

        model.provenance = check_export_provenance(model, provenance, source=str(files["config"]))
    return model.to(device) if device is not None else model


def _config_for_state(config: BEATsConfig, state: dict[str, torch.Tensor]) -> BEATsConfig:
    """Size the unused AudioSet predictor from the weights (present in some files, absent in others)."""
    predictor = state.get("backbone.predictor.weight")
    if predictor is None:
        return replace(config, finetuned_model=False)
    return replace(config, finetuned_model=True, predictor_class=predictor.shape[0])


def _check_head(state: dict[str, torch.Tensor], label_map: LabelMap | None, source: str) -> None:
    weight = state.get("classifier.weight")
    if weight is not None and label_map is not None and weight.shape[0] != len(label_map):
        raise ValueError(f"{source}: the classifier has {weight.shape[0]} outputs but the label map has "
                         f"{len(label_map)} labels; use the label_map.json that was saved with these weights")
    if weight is None and label_map is not None:
        raise ValueError(f"{source} has no classifier.* weights but a label map of {len(label_map)} labels was "
                         "given; drop label_map.json to load an encoder only")


def _cached_label_map(entry: WeightsEntry, revision: str | None) -> LabelMap:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(entry.repo_id, entry.label_map_filename, revision=revision or entry.revision)
    if isinstance(cached, str):
        verify_label_map(cached, entry)
        return LabelMap.from_json(cached)
    raise ValueError(f"pretrained=False builds {entry.name}'s species head, whose size comes from its label map, "
                     "which is not cached; pass num_classes=N, or return_features_only=True for the encoder alone")
