"""Weights as data and how they arrive: the registry, download -> SHA-256 verify -> safetensors -> strict load, and
the provenance of weights and probes."""

from importlib import import_module

_MODULES = ("integrity", "loading", "provenance", "weights")


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.hub.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
