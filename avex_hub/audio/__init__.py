"""Audio in: decoding and the channel contract, windows, datasets (folders, manifests), augmentations and the
synthetic dataset."""

from .._lazy import lazy_modules

_MODULES = ("augment", "contract", "datasets", "intervals", "items", "manifest", "synthetic", "windows")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
