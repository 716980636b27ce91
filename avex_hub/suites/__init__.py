"""Benchmark suites: readers for the published layouts of the model card's benchmarks (BEANS classification and
detection, BirdSet, BEANS-Zero, individual ID and vocal repertoire manifests) and the runner that writes our row
beside the card's (``avex-hub benchmark``)."""

from .._lazy import lazy_modules

_MODULES = ("beans", "beans_sets", "beans_zero", "birdset", "data", "detection", "manifest", "metrics", "protocol",
            "report", "runner")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
