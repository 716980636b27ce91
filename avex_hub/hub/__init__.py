"""Weights as data and how they arrive: the registry, download -> SHA-256 verify -> safetensors -> strict load, and
the provenance of weights and probes."""

from .._lazy import lazy_modules

_MODULES = ("card", "integrity", "loading", "provenance", "weights")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
