"""avex-hub: Earth Species Project's esp-aves2 BEATs bioacoustic encoders through torch.hub and pip.

    import avex_hub
    model = avex_hub.esp_aves2_sl_beats_all()          # published weights, SHA-256 verified
    model.predict("recording.wav", top_k=5)             # species with sigmoid scores (best 10 s window each)
"""

from importlib import import_module

from .beats import BEATsConfig, EncoderOutput
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
from .fbank import FbankConfig, KaldiFbank
from .hub import ChecksumError, WeightsNotAvailableError, build_model, download_weights, load_label_map
from .labels import LabelMap
from .model import MIN_SAMPLES, AvexModel, LongInputWarning, Prediction, WindowEmbeddings, WindowPrediction
from .preprocessing import Preprocessing
from .weights import WEIGHTS, WeightsEntry, get_weights

from ._version import __version__

__all__ = [
    "AvexModel", "BEATsConfig", "ChecksumError", "EncoderOutput", "FbankConfig", "KaldiFbank", "LabelMap",
    "LongInputWarning", "MIN_SAMPLES", "Prediction", "WindowEmbeddings", "WindowPrediction", "Preprocessing", "WEIGHTS", "WeightsEntry", "WeightsNotAvailableError",
    "attention_probe", "build_model", "download_weights", "esp_aves2_naturelm_audio_v1_beats",
    "esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "get_weights", "label_map", "linear_probe",
    "load_label_map", "load_probe", "mlp_probe",
]

# Submodules with optional or heavier dependencies load on first use: avex_hub.metrics, .probes, ...
_LAZY = {"audio", "data", "synthetic", "metrics", "embeddings", "evaluation", "probes", "training", "sklearn",
         "inference", "outputs", "windows", "precision", "provenance", "lightning", "lightning_predict", "augment",
         "finetune", "cli", "tutorial", "export"}
# ... and these names from them.
_LAZY_NAMES = {
    "load_audio": "audio", "AudioDataset": "data", "make_synthetic_dataset": "synthetic",
    "extract_embeddings": "embeddings", "Embeddings": "embeddings", "train_probe": "training",
    "save_probe": "probes", "evaluate": "evaluation", "compare_models": "evaluation",
    "compare_layers": "evaluation", "ResultsTable": "metrics", "AvexSklearnEmbedder": "sklearn",
    "ProvenanceMismatchError": "provenance",
}


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'avex_hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY | set(_LAZY_NAMES))
