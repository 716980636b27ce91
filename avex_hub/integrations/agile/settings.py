"""What made an archive's vectors (weights digest, layer, pooling, window, hop, channels, precision, provenance), and
the check that refuses to mix them: another model, other settings or a probe trained on other embeddings."""

from __future__ import annotations

from typing import Sequence

from ...embed.inference import inference_settings
from ...hub.provenance import Provenance

# What must be equal for stored vectors to be comparable with new ones (search) or to be added to (index).
SEARCH_KEYS = ("weights_sha256", "embedding_dim", "layers", "pooling", "window_s", "hop_s", "sample_rate")
# ``output_version`` too: an archive of an older version is upgraded before it is added to (.versions), one of a
# newer version is refused.
INDEX_KEYS = SEARCH_KEYS + ("model", "channels", "precision", "runtime", "output_version")


class SettingsMismatchError(ValueError):
    """A database, query model or probe made with other weights or settings; ``differences`` lists them."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


def archive_settings(model, *, layer: int = -1, pooling: str = "mean", window_s: float | None = None,
                     hop_s: float | None = None, channels="mix", precision: str = "fp32",
                     runtime: str = "torch") -> dict:
    """The settings an archive records: those of ``avex-hub embed`` (one layer) plus the embeddings' provenance.
    A torch archive leaves ``runtime`` out, as archives made before runtimes did (read back, it is torch), so
    both are added to alike; an archive of another runtime is added to by that runtime only."""
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ValueError(f"an archive holds one layer's embeddings: layer must be an int (e.g. -1), got {layer!r}")
    settings = inference_settings(model, "embed", window_s=window_s, hop_s=hop_s, channels=channels, layers=layer,
                                  pooling=pooling, precision=precision, runtime=runtime).to_dict()
    if runtime == "torch":
        del settings["runtime"]
    provenance = Provenance.from_model(model, layers=settings["layers"], pooling=pooling)
    return {**settings, "embedding_dim": model.embedding_dim, "provenance": provenance.to_dict()}


def output_version(settings: dict) -> int:
    """The output version that made an archive's vectors (0 for archives that recorded none: they padded a recording
    of at most one window to the window, as version 2 did)."""
    return int(settings.get("output_version", 0))


def index_keys(recorded: dict, given: dict) -> tuple[str, ...]:
    """The keys that must agree to add ``given``'s vectors to an archive of ``recorded`` settings: :data:`INDEX_KEYS`,
    less ``output_version`` when the archive's is older (``avex-hub index`` upgrades it first: see
    :func:`avex_hub.integrations.agile.versions.upgrade_vectors`)."""
    if output_version(recorded) < output_version(given):
        return tuple(k for k in INDEX_KEYS if k != "output_version")
    return INDEX_KEYS


def differences(recorded: dict, given: dict, keys: Sequence[str]) -> list[str]:
    """``key: database X, given Y`` for each of ``keys`` whose values differ."""
    return [f"{k}: database {recorded.get(k, '(absent)')!r}, given {given.get(k, '(absent)')!r}"
            for k in keys if recorded.get(k, "(absent)") != given.get(k, "(absent)")]


def mismatch(where: str, diffs: list[str], fix: str) -> SettingsMismatchError:
    """The error for ``diffs``, one per line, and what to do."""
    return SettingsMismatchError(f"{where} ({len(diffs)} difference{'s' if len(diffs) > 1 else ''}):\n  - "
                                 + "\n  - ".join(diffs) + f"\nTo fix: {fix}", diffs)
