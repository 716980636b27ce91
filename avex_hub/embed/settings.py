"""The settings of a run: everything that changes the numbers in an output (not the device or the batch size),
typed and frozen. ``avex_hub.embed.inference.inference_settings`` makes them from a model and checks them.

They are stored with every output (the Parquet schema metadata ``avex_hub``, the NPZ field ``settings``, the CSV
sidecar ``<out>.settings.json`` and every ``<out>.parts/`` shard) as :meth:`InferenceSettings.to_dict`, and a
stored result is reused only when :meth:`~InferenceSettings.comparable` agrees. That dict has the keys and value
types the string-keyed settings of earlier versions had, so what they wrote reads back, and their shards keep
their names; a change to the values written for the same settings raises ``OUTPUT_VERSION`` instead.

A caller that stores settings of its own (the agile archive) keeps them as :meth:`~InferenceSettings.to_json` and
reads them back with :meth:`InferenceSettings.from_dict` (keys it adds are left to it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["OUTPUT_VERSION", "InferenceSettings", "EmbedSettings", "ClassifySettings"]

# Raised whenever a release changes the values or layout written for the same settings; part of the settings,
# so shards of an older layout are recomputed instead of merged with new ones. 3: a recording no longer than one
# window runs at its own length (2 padded it to the window; avex_hub.embed.outputs.carry_over_shard keeps the
# version-2 shards of longer recordings, whose values did not change).
OUTPUT_VERSION = 3


@dataclass(frozen=True)
class InferenceSettings:
    """What every run records: the model (name, weights digest, full architecture config and preprocessing), the
    windows (``window_s``, ``hop_s``, ``channels``), the precision and runtime, the output format version and the
    package version. ``task`` says which subclass holds the rest: :class:`EmbedSettings` or
    :class:`ClassifySettings`."""

    model: str
    weights_sha256: str | None
    window_s: float
    hop_s: float
    channels: str | int  # "mix", "all" or a channel index
    precision: str
    # The runtime that ran the encoder (avex_hub.encoder.runtimes): its rows never mix with another runtime's.
    # Settings stored before runtimes existed lack it and read back as "torch".
    runtime: str = dataclasses.field(default="torch", kw_only=True)
    sample_rate: int
    architecture: dict
    preprocessing: dict
    output_version: int
    avex_hub_version: str
    task: ClassVar[str] = ""

    def to_dict(self) -> dict:
        """The settings as stored: plain JSON values (lists, not tuples), ``task`` included."""
        out = {"task": self.task}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) \
                else value
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as the JSON written into Parquet and NPZ outputs (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def comparable(self) -> dict:
        """The settings that decide whether a stored result can be reused: all of them but the package version
        (``output_version`` changes when a release changes what is written)."""
        return {k: v for k, v in self.to_dict().items() if k != "avex_hub_version"}

    @classmethod
    def from_dict(cls, stored: dict) -> "InferenceSettings":
        """Settings read back from an output or shard: :class:`EmbedSettings` or :class:`ClassifySettings` by the
        stored ``task`` (called on a subclass: that subclass, e.g. an archive's settings with fields of its own).
        Keys that are not fields are left out; ValueError for another ``task`` or for missing keys."""
        kinds = {kind.task: kind for kind in (EmbedSettings, ClassifySettings)}
        kind = cls if cls.task else kinds.get(stored.get("task"))
        if kind is None or stored.get("task") != kind.task:
            expected = repr(cls.task) if cls.task else "'embed' or 'classify'"
            raise ValueError(f"stored settings name task {stored.get('task')!r}; expected {expected}")
        names = [f.name for f in dataclasses.fields(kind)]
        required = [f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in stored]
        if missing:
            raise ValueError(f"stored {kind.task} settings lack {missing}")
        values = {n: tuple(stored[n]) if isinstance(stored[n], list) else stored[n] for n in names if n in stored}
        return kind(**values)


@dataclass(frozen=True)
class EmbedSettings(InferenceSettings):
    """An ``embed`` run's settings: the layers (indices in ``0..num_layers``, in the order asked for) and the
    pooling over frames (``"mean"`` or ``"max"``)."""

    layers: tuple[int, ...]
    pooling: str
    task: ClassVar[str] = "embed"


@dataclass(frozen=True)
class ClassifySettings(InferenceSettings):
    """A ``classify`` run's settings: ``top_k`` labels per window, and the label head's size and names' digest.
    ``species`` (names in the label map): every window scores each of these labels instead of its top k."""

    top_k: int
    labels: int
    labels_sha256: str
    species: tuple[str, ...] = ()
    task: ClassVar[str] = "classify"

    def to_dict(self) -> dict:
        """As stored; a top-k run leaves ``species`` out, so its outputs and shard names are those of releases before
        ``species`` (finished shards are reused)."""
        out = super().to_dict()
        if not self.species:
            del out["species"]
        return out
