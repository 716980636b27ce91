"""Audio in: decoding and the channel contract, windows, datasets (folders, manifests), augmentations and the
synthetic dataset."""

from .._lazy import lazy_modules

_MODULES = ("arrays", "augment", "collate", "datasets", "decoding", "folders", "high_frequency", "intervals", "items",
            "manifest", "quality", "resampling", "synthetic", "wav_header", "windows")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
