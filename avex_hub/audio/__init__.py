"""Audio in: arrays and channels, resampling, the high-frequency meter, quality flags, decoding, the folder walk,
collation, windows and their batches, datasets (folders, manifests), augmentations and the synthetic dataset."""

from .._lazy import lazy_modules

_MODULES = ("arrays", "augment", "batches", "collate", "datasets", "decoding", "folders", "high_frequency",
            "intervals", "items", "manifest", "quality", "resampling", "synthetic", "wav_header", "windows")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
