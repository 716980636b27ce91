"""The encoder: BEATs, the Kaldi filterbank, the user-facing ``AvexModel`` and the preprocessing contract it
carries."""

from importlib import import_module

_MODULES = ("beats", "fbank", "model", "precision", "preprocessing")


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.encoder.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
