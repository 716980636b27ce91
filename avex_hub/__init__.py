"""avex-hub: Earth Species Project's esp-aves2 BEATs bioacoustic encoders through torch.hub and pip.

    import avex_hub
    model = avex_hub.esp_aves2_sl_beats_all()          # published weights, SHA-256 verified
    model.predict("recording.wav", top_k=5)             # species with sigmoid scores (best 10 s window each)
"""

from importlib import import_module

from .encoder.beats import BEATsConfig, EncoderOutput
from .entrypoints import (
    attention_probe,
    esp_aves2_naturelm_audio_v1_beats,
    esp_aves2_sl_beats_all,
    esp_aves2_sl_beats_bio,
    label_map,
    linear_probe,
    load_probe,
    mlp_probe,
)
from .encoder.fbank import FbankConfig, KaldiFbank
from .hub.loading import ChecksumError, WeightsNotAvailableError, build_model, download_weights, load_label_map
from .labels import LabelMap
from .encoder.model import MIN_SAMPLES, AvexModel, LongInputWarning, Prediction, WindowEmbeddings, WindowPrediction
from .encoder.preprocessing import Preprocessing
from .hub.weights import WEIGHTS, WeightsEntry, get_weights

from ._version import __version__

__all__ = [
    "AvexModel", "BEATsConfig", "ChecksumError", "EncoderOutput", "FbankConfig", "KaldiFbank", "LabelMap",
    "LongInputWarning", "MIN_SAMPLES", "Prediction", "WindowEmbeddings", "WindowPrediction", "Preprocessing", "WEIGHTS", "WeightsEntry", "WeightsNotAvailableError",
    "attention_probe", "build_model", "download_weights", "esp_aves2_naturelm_audio_v1_beats",
    "esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "get_weights", "label_map", "linear_probe",
    "load_label_map", "load_probe", "mlp_probe",
]

# Submodules with optional or heavier dependencies load on first use: avex_hub.heads.metrics, .probes, ...
_LAZY = {"audio", "heads", "embed", "integrations", "encoder", "hub", "cli", "tutorial"}
# ... and these names from them.
_LAZY_NAMES = {
    "load_audio": "audio.contract",
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
