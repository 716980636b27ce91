"""Subpackages whose modules load on first use (``avex_hub.audio.windows``), so importing a package costs nothing."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_modules(package: str, modules: tuple[str, ...]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: its ``modules`` are imported when first named."""

    def __getattr__(name: str):
        if name in modules:
            return import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(import_module(package))) | set(modules))

    return __getattr__, __dir__
