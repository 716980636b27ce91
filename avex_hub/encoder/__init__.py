"""The encoder: BEATs (and its CPU fast path), the Kaldi filterbank, the user-facing ``AvexModel`` and the
preprocessing contract it carries, precision, and the model as an ONNX graph run by other runtimes."""

from .._lazy import lazy_modules

_MODULES = ("beats", "fastpath", "fbank", "model", "onnx_graph", "pipeline",
            "precision", "preprocessing", "recordings", "runtime_cache", "runtimes")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
