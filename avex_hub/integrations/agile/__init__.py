"""Agile modelling on a perch-hoplite embedding database: index an archive, search by example, label, train, detect.

    from avex_hub.integrations import agile
    report = agile.index_files(model, ["recordings/"], "archive/")          # resumable; new files only on a re-run
    archive = agile.Archive.open("archive/")
    hits = agile.search(archive, model, [agile.Query("call.wav", 3.0, 5.5)], top=100)
    agile.write_hits_csv(hits, "hits.csv")          # fill the label / label_type columns, then
    agile.add_labels_csv(archive, "hits.csv")       # labels live in the database (hoplite annotations)
    agile.train_classifier(archive, "probe.safetensors")   # our probe format, with provenance
    detections = agile.detect(archive, "probe.safetensors")
    detections.uncertain(50)                        # margin sampling for the next round

The package follows the steps of the loop, as perch-hoplite's own ``agile/`` does: :mod:`.archive` (the
database), :mod:`.settings` (what made its vectors), :mod:`.model` (hoplite's model interface), :mod:`.index`,
:mod:`.search`, :mod:`.labels`, :mod:`.classify` (training and detection) and :mod:`.widget` (labelling in a
notebook), with :mod:`.store` (its files: checks, connections, creation), :mod:`.schema` (the versioned schema),
:mod:`.versions` (the output version of its vectors and their upgrade) and :mod:`.lock` (one writer at a time) under
the archive.
This module re-exports their public names.

The database is hoplite's own (``perch_hoplite.db.sqlite_usearch_impl``: SQLite tables + a usearch vector index,
cosine metric, float16 vectors: the only
vector type hoplite 1.0 stores), so hoplite's notebooks and search work on it. It stores the raw pooled
embeddings (as ``avex-hub embed`` writes them), one row per window and channel, and under the metadata key
``avex_hub`` the settings that made them (weights digest, layer, pooling, window, hop, channels, precision and
the :class:`~avex_hub.hub.provenance.Provenance` of the embeddings). Searching with another model or settings, and
detecting with a probe trained on other embeddings, are refused with a :class:`SettingsMismatchError` naming both.

:class:`AvexEmbeddingModel` implements hoplite's ``EmbeddingModel`` interface on our model (for hoplite's own
``EmbedWorker`` and notebooks); ``index_files`` is built on :func:`avex_hub.embed.inference.iter_file_results`, the code
behind ``avex-hub embed``, so both run at the same speed. Needs ``pip install 'avex-hub[agile]'``. Importing this
package imports perch-hoplite, which registers a SQLite adapter for Python lists (its own storage format).
"""

from __future__ import annotations

try:
    import perch_hoplite.db.sqlite_usearch_impl  # noqa: F401 - the extra's check, before the modules that need it
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError("avex_hub.integrations.agile needs perch-hoplite: pip install 'avex-hub[agile]'") from _error

from .archive import METADATA_KEY, Archive
from .classify import Detections, detect, train_classifier
from .index import IndexReport, PruneReport, index_files, prune
from .labels import LABEL_TYPES, LabelsFileError, LabelsReport, add_labels, add_labels_csv, export_labels, \
    import_labels, labelled_windows, read_labels_csv
from .lock import ArchiveLockedError
from .model import AvexEmbeddingModel
from .search import HIT_COLUMNS, Hit, Query, embed_queries, parse_query, search, search_vectors, write_hits_csv, \
    write_hits_raven
from .schema import SchemaError
from .settings import SettingsMismatchError, archive_settings
from .store import ArchiveError, ArchiveNotice
from .widget import label_widget

__all__ = [
    "AvexEmbeddingModel", "Archive", "IndexReport", "Query", "Hit", "Detections", "SettingsMismatchError",
    "archive_settings", "index_files", "parse_query", "embed_queries", "search", "search_vectors", "write_hits_csv",
    "write_hits_raven", "add_labels", "add_labels_csv", "read_labels_csv", "labelled_windows",
    "train_classifier", "detect", "label_widget", "METADATA_KEY", "LABEL_TYPES", "HIT_COLUMNS",
    "ArchiveError", "ArchiveNotice", "ArchiveLockedError", "SchemaError", "LabelsFileError", "LabelsReport",
    "PruneReport", "prune", "export_labels", "import_labels",
]
