"""What sits on the embeddings: probes, probe training, fine-tuning helpers, evaluation and metrics."""

from .._lazy import lazy_modules

_MODULES = ("evaluation", "finetune", "metrics", "probe_files", "probe_module", "probes", "results", "retrieval",
            "scoring", "splits", "targets", "train_options", "training")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
