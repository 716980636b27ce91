"""Embeddings out: extraction with caches, file inference and output writers."""

from .._lazy import lazy_modules

_MODULES = ("cache", "clips", "embeddings", "extract", "inference", "outputs", "settings")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
