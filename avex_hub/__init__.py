"""avex-hub: Earth Species Project's esp-aves2 BEATs bioacoustic encoders through torch.hub and pip.

    import avex_hub
    model = avex_hub.esp_aves2_sl_beats_all()          # published weights, SHA-256 verified
    model.predict("recording.wav", top_k=5)             # species with sigmoid scores (best 10 s window each)
"""

from importlib import import_module

from . import entrypoints
from .entrypoints import *  # noqa: F403  the entry points (models, label_map, probes): entrypoints.__all__
from .hub.loading import ChecksumError, WeightsNotAvailableError, build_model, download_weights, load_label_map
from .labels import LabelMap
from .encoder.model import AvexModel, LongInputWarning
from .encoder.recordings import Prediction, WindowEmbeddings, WindowPrediction
from .hub.weights import WEIGHTS, get_weights

from ._version import __version__

# What a user needs, each in README's "API summary" (tests/test_hubconf.py checks both ways). The rest of the
# package is reached through its modules (avex_hub.encoder.beats.BEATsConfig, avex_hub.heads.metrics, ...).
__all__ = [
    # the models: any checkpoint, the weights registry (the published models are entry points, added below)
    "build_model", "download_weights", "WEIGHTS", "get_weights",
    # the model and what predict / embed return
    "AvexModel", "Prediction", "WindowPrediction", "WindowEmbeddings", "LongInputWarning",
    # species labels
    "load_label_map", "LabelMap",
    # audio in, embeddings of a dataset out (loaded on first use)
    "load_audio", "AudioDataset", "extract_embeddings", "Embeddings",
    # probes and evaluation (loaded on first use)
    "train_probe", "save_probe", "evaluate",
    # errors worth catching
    "ChecksumError", "WeightsNotAvailableError", "ProvenanceMismatchError",
]
__all__ += entrypoints.__all__  # the published models, label_map, the probe builders and load_probe

# Submodules with optional or heavier dependencies load on first use: avex_hub.heads.metrics, .probes, ...
_LAZY = {"audio", "heads", "embed", "integrations", "encoder", "hub", "cli", "tutorial"}
# ... and these names from them.
_LAZY_NAMES = {
    "load_audio": "audio.decoding",
    "AudioDataset": "audio.datasets",
    "make_synthetic_dataset": "audio.synthetic",
    "extract_embeddings": "embed.extract",
    "Embeddings": "embed.extract",
    "train_probe": "heads.training",
    "save_probe": "heads.probes",
    "evaluate": "heads.evaluation",
    "compare_models": "heads.evaluation",
    "compare_layers": "heads.evaluation",
    "ResultsTable": "heads.metrics",
    "AvexSklearnEmbedder": "integrations.sklearn",
    "ProvenanceMismatchError": "hub.provenance",
}


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'avex_hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY | set(_LAZY_NAMES))
