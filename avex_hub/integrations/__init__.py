"""Other libraries' interfaces: scikit-learn, Lightning (fine-tuning, distributed prediction), ONNX export, perch-
hoplite (agile modelling)."""

from importlib import import_module

_MODULES = ("agile", "lightning", "lightning_predict", "onnx_export", "sklearn")


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.integrations.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
