"""Audio in: decoding and the channel contract, windows, datasets (folders, manifests), augmentations and the
synthetic dataset."""

from importlib import import_module

_MODULES = ("augment", "contract", "datasets", "synthetic", "windows")


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.audio.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
