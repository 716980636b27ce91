"""BEANS (github.com/earthspecies/beans; code MIT, each data set under its own licence) read from its own layout.

BEANS has no download of its own: its ``scripts/download_data.sh`` fetches each source (two of them, cbi and
rfcx, from Kaggle competitions, which need a Kaggle account, the competition's rules accepted and an API token),
converts it and writes the split files of :mod:`avex_hub.suites.beans_sets` into ``data/`` of the BEANS checkout
(about 300 GB with the originals, by BEANS's README). Point ``root`` at that checkout.

- Classification: ``<set>.{train,valid,test}.csv`` as pandas writes them (an unnamed index column, then ``path``
  and ``label``; other columns are ignored). ``path`` is relative to the checkout (absolute paths are kept). Each
  clip is the first ``clip_s`` seconds of its file, zero padded, as BEANS loads it.
- Detection: ``{train,valid,test}.jsonl``, one recording per line: ``{"path", "length" (seconds), "annotations":
  [{"st", "ed", "label"}, ...]}``, windowed and labelled by :mod:`avex_hub.suites.detection`. BEANS loads at most
  the first 60 s of a file (its scripts cut recordings into 60 s chunks, so its own files are no longer); every
  window listed here is read, however long the file.
- Labels are compared as text (``label_text``: BEANS writes some as numbers). A label outside the set's list
  becomes the set's ``unknown_label`` (enabirds: ``OTHR``, hainan-gibbons: ``1``); with none, the set fails with a
  ValueError naming every such label and where it is, as BEANS raises.
- A missing ``valid`` file: ``val_fraction`` of train is held out instead, seeded, and said in ``SetData.notes``
  (detection: windows are drawn singly, so a validation window may overlap a train window of the same recording;
  BEANS's own preparation writes every set's ``valid`` file). A missing train or test file: FileNotFoundError
  naming it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..audio.items import AudioItem
from .beans_sets import BEANS_SETS, BeansSet, beans_set
from .data import SetData, checked_dataset, hold_out_val, label_text
from .detection import label_windows, window_starts

__all__ = ["read_beans_set", "BEANS_CLASSIFICATION", "BEANS_DETECTION", "BEANS_CONTROLS", "KAGGLE_SETS"]

BEANS_CLASSIFICATION = tuple(s.name for s in BEANS_SETS if s.task == "classification")
BEANS_DETECTION = tuple(s.name for s in BEANS_SETS if s.task == "detection")
BEANS_CONTROLS = tuple(s.name for s in BEANS_SETS if s.control)
KAGGLE_SETS = ("cbi", "rfcx")  # BEANS downloads these from Kaggle competitions (scripts/cbi.py, scripts/rfcx.py)


def read_beans_set(root: str | os.PathLike, name: str, *, val_fraction: float = 0.2, seed: int = 0) -> SetData:
    """The BEANS set ``name`` from the BEANS checkout at ``root`` as train/val/test AudioDatasets (module doc)."""
    spec, root = beans_set(name), Path(root).expanduser()
    files = {role: root / spec.path(role) for role in ("train", "val", "test")}
    for role in ("train", "test"):
        if not files[role].is_file():
            kaggle = (" (this set comes from a Kaggle competition: a Kaggle account, the competition's rules "
                      "accepted and an API token in ~/.kaggle/kaggle.json)" if name in KAGGLE_SETS else "")
            raise FileNotFoundError(f"BEANS {name}: no {role} split at {files[role]}; run BEANS's "
                                    f"scripts/download_data.sh in a BEANS checkout{kaggle} and pass that checkout "
                                    "as --data")
    read = _read_csv if spec.task == "classification" else _read_jsonl
    splits, failures, notes = {}, [], []
    for role, path in files.items():
        if not path.is_file():
            continue
        items = read(path, spec, root)
        data, skipped = checked_dataset(items, labels=spec.labels, clip_s=spec.clip_s or spec.window_s,
                                        multilabel=spec.task == "detection", source=f"BEANS {name} {role} ({path})")
        splits[role], failures = data, failures + skipped
    if "val" not in splits:
        splits["train"], splits["val"] = hold_out_val(splits["train"], val_fraction, seed)
        notes.append(f"no {files['val'].name}: validation is {val_fraction:.0%} of train, held out with seed {seed}"
                     + (" (windows drawn singly: a validation window may overlap a train window of its recording)"
                        if spec.task == "detection" else ""))
    return SetData(name, {role: splits[role] for role in ("train", "val", "test")}, spec.task == "detection",
                   source=str(root), control=spec.control, notes=notes, failures=failures)


def _resolve(root: Path, cell: str) -> Path:
    path = Path(cell)
    return path if path.is_absolute() else root / path


def _read_csv(path: Path, spec: BeansSet, root: Path) -> list[AudioItem]:
    """A classification split: ``(file, label)`` items; labels outside the list raise (no set has an unknown
    label for classification), naming each with its line."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: a BEANS classification split needs columns 'path' and 'label'; found "
                             f"{reader.fieldnames}")
        rows = [(reader.line_num, row) for row in reader]
    known, items, unknown = set(spec.labels), [], []
    for line, row in rows:
        label = label_text(row["label"])
        if label not in known:
            label = spec.unknown_label or label
            if label not in known:
                unknown.append(f"{label!r} (line {line})")
        items.append(AudioItem(_resolve(root, row["path"]), (label,), origin=f"{path.name} line {line}"))
    _refuse_unknown(path, spec, unknown)
    return items


def _read_jsonl(path: Path, spec: BeansSet, root: Path) -> list[AudioItem]:
    """A detection split: one item per window of every recording, with the classes BEANS's rule gives it."""
    index = {label: i for i, label in enumerate(spec.labels)}
    items, unknown = [], []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {line_number}"
            recording = _recording(line, where)
            classes = []
            for event in recording["annotations"]:
                label = label_text(event["label"])
                label = label if label in index else (spec.unknown_label or label)
                if label not in index:
                    unknown.append(f"{label!r} ({where})")
                classes.append(index.get(label, 0))
            starts = window_starts(float(recording["length"]), spec.window_s, spec.shift_s)
            ends = starts + spec.window_s
            events = recording["annotations"]
            hits = label_windows(starts, ends, [float(e["st"]) for e in events], [float(e["ed"]) for e in events],
                                 classes, len(spec.labels))
            file = _resolve(root, recording["path"])
            # A window is its start and the dataset's clip length (the window): BEANS zero pads a window that runs
            # past the end of its file (the one window of a short recording), and so does the loader.
            items += [AudioItem(file, tuple(spec.labels[k] for k in row.nonzero()[0]), float(s),
                                origin=f"{where}, {s:g}-{e:g} s") for s, e, row in zip(starts, ends, hits)]
    _refuse_unknown(path, spec, unknown)
    return items


def _recording(line: str, where: str) -> dict:
    """One line of a detection split, checked for the keys BEANS writes."""
    try:
        recording = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not a JSON object ({error}); BEANS writes one recording per line") from None
    missing = [k for k in ("path", "length", "annotations") if k not in (recording if isinstance(recording, dict)
                                                                         else {})]
    if missing:
        raise ValueError(f"{where}: no {missing}; a BEANS detection line has path, length and annotations")
    if not isinstance(recording["annotations"], list):
        raise ValueError(f"{where}: annotations must be a list of {{st, ed, label}}, found {recording['annotations']}")
    for event in recording["annotations"]:
        if not (isinstance(event, dict) and all(k in event for k in ("st", "ed", "label"))):
            raise ValueError(f"{where}: an annotation without st, ed and label: {event}")
    for value in [recording["length"]] + [event[k] for event in recording["annotations"] for k in ("st", "ed")]:
        if not _is_seconds(value):
            raise ValueError(f"{where}: length, st and ed must be seconds (numbers), found {value!r}")
    return recording


def _is_seconds(value) -> bool:
    try:
        return not isinstance(value, bool) and float(value) == float(value)  # a number, or text of one; not nan
    except (TypeError, ValueError):
        return False


def _refuse_unknown(path: Path, spec: BeansSet, unknown: list[str]) -> None:
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        raise ValueError(f"{path}: {len(unknown)} labels are not in BEANS's list for {spec.name} and the set maps "
                         f"none to an unknown label: {shown}; known labels: {list(spec.labels)}")
