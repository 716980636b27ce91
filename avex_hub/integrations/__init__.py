"""Other libraries' interfaces: scikit-learn, Lightning (fine-tuning, distributed prediction), ONNX export, perch-
hoplite (agile modelling)."""

from .._lazy import lazy_modules

_MODULES = ("agile", "lightning", "lightning_data", "lightning_predict", "onnx_export", "sklearn")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
