"""BirdSet (Hugging Face ``DBD-research-group/BirdSet``; code BSD-3-Clause, recordings under their own licences,
mostly CC) in its dedicated-train setup, read from the files its Hub repository serves.

Layout (what BirdSet's loading script downloads, per configuration such as ``HSN``; Rauch et al. 2025, arXiv
2403.10380): ``<root>/<CFG>/<CFG>_metadata_train.parquet`` and ``<CFG>_metadata_test_5s.parquet`` (one row per file,
keyed by the file's name in the index or a ``filepath`` column), and the audio in ``<CFG>_train_shard_NNNN.tar.gz``
and ``<CFG>_test5s_shard_NNNN.tar.gz``, which must be extracted (``tar -xzf``) anywhere under ``<root>/<CFG>/``:
files are found by name. Download them with ``huggingface_hub`` (``snapshot_download("DBD-research-group/BirdSet",
repo_type="dataset", revision="data", allow_patterns="HSN/*")``) or from the dataset page; no account is needed.

- ``train``: the focal Xeno-canto recordings of the site's species (the dedicated train set). Ours, stated: one
  5 s clip per recording, centred on its first detected event of the largest event cluster that is not noise
  (cluster -1, kept only when it is the only one; BirdSet's own event mapping takes that cluster's events), the
  first 5 s of a longer event (as BirdSet's loading example cuts it), or the first 5 s of a recording without
  events; kept inside the recording where its length is known. Labels: ``ebird_code_multilabel`` when given,
  else ``ebird_code``.
- ``val``: ``val_fraction`` (0.2, as the official avex config and BirdSet's datamodule use) of train, held out
  with ``seed``.
- ``test``: the ``test_5s`` soundscape segments, each a 5 s file with its ``ebird_code_multilabel`` (none: a
  segment without birds, all negative).
- Classes: the names met in train and test, sorted (BirdSet's class lists live in its loading script, not in these
  files); a class of test with no train clip stays a class the probe can only score low. Integer codes are used
  as their text.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..audio.items import AudioItem
from .data import SetData, checked_dataset, hold_out_val, label_text

__all__ = ["BIRDSET_SETS", "BIRDSET_CARD_SETS", "CLIP_S", "read_birdset", "train_clip"]

BIRDSET_SETS = ("HSN", "NBP", "NES", "PER", "POW", "SNE", "SSW", "UHH")
# The sets the official avex library's benchmark config (configs/data_configs/benchmark.yml) scores BirdSet on;
# which ones the card's aggregate averages is not published.
BIRDSET_CARD_SETS = ("POW", "PER", "NES", "NBP", "HSN")
CLIP_S = 5.0  # BirdSet's segment length


def read_birdset(root: str | os.PathLike, name: str, *, val_fraction: float = 0.2, seed: int = 0) -> SetData:
    """The BirdSet configuration ``name`` (e.g. ``HSN``) under ``root`` as train/val/test AudioDatasets."""
    if name not in BIRDSET_SETS:
        raise KeyError(f"BirdSet has no test configuration {name!r}; it has: {', '.join(BIRDSET_SETS)}")
    folder = Path(root).expanduser() / name
    tables = {role: _metadata(folder / f"{name}_metadata_{part}.parquet")
              for role, part in (("train", "train"), ("test", "test_5s"))}
    audio = _audio_files(folder)
    items = {"train": [_train_item(row, audio, folder) for row in tables["train"]],
             "test": [_test_item(row, audio, folder) for row in tables["test"]]}
    labels = sorted({label for role in items for item in items[role] for label in item.labels})
    splits, failures = {}, []
    for role in ("train", "test"):
        splits[role], skipped = checked_dataset(items[role], labels=labels, clip_s=CLIP_S, multilabel=True,
                                                source=f"BirdSet {name} {role}")
        failures += skipped
    train, val = hold_out_val(splits["train"], val_fraction, seed)
    notes = [f"validation is {val_fraction:.0%} of the dedicated train set, held out with seed {seed}"]
    return SetData(name, {"train": train, "val": val, "test": splits["test"]}, True, source=str(folder),
                   notes=notes, failures=failures)


def _metadata(path: Path) -> list[dict]:
    """The rows of a metadata parquet file as dicts, each with ``file``: the audio file's name."""
    if not path.is_file():
        raise FileNotFoundError(f"BirdSet: no {path}; download {path.parent.name}/ of DBD-research-group/BirdSet "
                                "(revision 'data') and extract its shards there")
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError("reading BirdSet needs pyarrow: pip install 'avex-hub[cli]'") from error
    table = pq.read_table(path)
    rows = table.to_pylist()
    if "filepath" in table.column_names:
        names = [str(row["filepath"]) for row in rows]
    else:
        index = [c for c in table.column_names if c.startswith("__index_level") or c == "filepath"]
        if not index:
            raise ValueError(f"{path}: no 'filepath' column or index; found {table.column_names}")
        names = [str(row[index[0]]) for row in rows]
    for row, name in zip(rows, names):
        row["file"] = name.replace("\\", "/").rsplit("/", 1)[-1]
    return rows


def _audio_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by name (the extracted shards)."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if not name.endswith((".parquet", ".tar.gz", ".json")):
                found.setdefault(name, Path(dirpath) / name)
    return found


def _names(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(label_text(v) for v in value)
    return (label_text(value),)


def train_clip(events, clusters, length_s: float | None) -> tuple[float, float]:
    """``(start, end)`` of a train recording's 5 s clip (module docstring) from its ``detected_events``
    (``[[start, end], ...]``), their ``event_cluster`` ids and its length (None: unknown)."""
    events = [tuple(map(float, e)) for e in (events if events is not None else [])]
    clusters = list(clusters) if clusters is not None and len(clusters) == len(events) else [0] * len(events)
    birds = [(e, c) for e, c in zip(events, clusters) if c != -1] or list(zip(events, clusters))
    if not birds:
        return 0.0, CLIP_S
    ids, counts = np.unique([c for _, c in birds], return_counts=True)
    biggest = ids[counts.argmax()]
    start, end = next(e for e, c in birds if c == biggest)
    begin = max(0.0, start if end - start >= CLIP_S else (start + end - CLIP_S) / 2)
    if length_s is not None and length_s > 0:
        begin = max(0.0, min(begin, length_s - CLIP_S))
    return begin, begin + CLIP_S


def _train_item(row: dict, audio: dict[str, Path], folder: Path) -> AudioItem:
    labels = _names(row.get("ebird_code_multilabel")) or _names(row.get("ebird_code"))
    length = row.get("length")
    start, _ = train_clip(row.get("detected_events"), row.get("event_cluster"), float(length) if length else None)
    # The clip is its start and the dataset's 5 s (padded where the recording ends sooner): the metadata's length
    # is in whole seconds, too coarse to bound the end.
    return AudioItem(audio.get(row["file"], folder / row["file"]), labels, start, origin=f"train {row['file']}")


def _test_item(row: dict, audio: dict[str, Path], folder: Path) -> AudioItem:
    return AudioItem(audio.get(row["file"], folder / row["file"]), _names(row.get("ebird_code_multilabel")),
                     origin=f"test_5s {row['file']}")
