"""What sits on the embeddings: probes, probe training, fine-tuning helpers, evaluation and metrics."""

from importlib import import_module

_MODULES = ("evaluation", "finetune", "metrics", "probes", "training")


def __getattr__(name: str):
    # Modules load on first use (``avex_hub.heads.<module>``), so importing the package costs nothing.
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
