"""The encoder: BEATs, the Kaldi filterbank, the user-facing ``AvexModel`` and the preprocessing contract it
carries."""

from .._lazy import lazy_modules

_MODULES = ("beats", "fbank", "model", "pipeline", "precision", "preprocessing", "recordings")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
