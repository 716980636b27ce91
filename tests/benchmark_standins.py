"""Tiny stand-ins for the benchmarks' published layouts, written exactly as their tools write them.

BEANS: split CSVs as pandas' ``to_csv`` writes them (an unnamed index column first, labels with commas quoted)
and detection JSON lines as its scripts write them (``path``, ``length``, ``annotations`` of ``st``/``ed``/
``label``; numbers where BEANS has numbers). BirdSet: ``<CFG>/<CFG>_metadata_{train,test_5s}.parquet`` keyed by
file name (a pandas index named ``filepath``), audio extracted from the shards into a sub-folder. BEANS-Zero:
``shard*.parquet`` with ``id``, ``dataset_name``, ``audio``, ``output``, ``metadata``. The clips are a few seconds
of tones whose pitch depends on the class, so a probe has something to learn.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int, pitch: float, seed: int) -> np.ndarray:
    """A tone at ``pitch`` Hz with a little seeded noise, float32 [samples]."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (0.3 * np.sin(2 * np.pi * pitch * t) + noise).astype(np.float32)


def write_wav(path: Path, seconds: float, rate: int, pitch: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, pitch, seed), rate)
    return path


def write_pandas_csv(path: Path, rows: list[dict]) -> None:
    """As ``DataFrame.to_csv``: an unnamed index column, then the columns; fields with commas quoted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", *columns])
        writer.writerows([[i, *(row[c] for c in columns)] for i, row in enumerate(rows)])


def beans_classification(root: Path, folder: str, file: str, labels: list[str], *, per_class: dict[str, int],
                         seconds: float = 1.5, rate: int = 16000, splits=("train", "valid", "test"),
                         extra: dict[str, list[str]] | None = None) -> None:
    """A BEANS classification set: ``per_class[split]`` clips of each label in each of ``splits`` (file names as
    ``file`` with ``{split}``), paths relative to the checkout; ``extra[split]`` adds clips of other labels."""
    for s, split in enumerate(splits):
        rows = []
        names = [label for label in labels for _ in range(per_class[split])] + list((extra or {}).get(split, []))
        for i, label in enumerate(names):
            pitch = 300.0 + 400.0 * (labels.index(label) if label in labels else len(labels))
            rel = f"{folder}/audio/{split}_{i}.wav"
            write_wav(root / rel, seconds, rate, pitch, seed=100 * s + i)
            rows.append({"path": rel, "label": label})
        write_pandas_csv(root / folder / file.format(split=split), rows)


def beans_detection(root: Path, folder: str, recordings: dict[str, list[dict]], *, rate: int = 16000) -> None:
    """A BEANS detection set: ``recordings[split]`` is a list of ``{"name", "length", "annotations"}``; each
    recording is written as a WAV of ``length`` seconds and listed in ``<split>.jsonl``."""
    for split, recs in recordings.items():
        lines = []
        for r, rec in enumerate(recs):
            rel = f"{folder}/wav/{rec['name']}.wav"
            write_wav(root / rel, rec["length"], rate, 500.0 + 100 * r, seed=r)
            lines.append(json.dumps({"path": rel, "length": rec["length"], "annotations": rec["annotations"]}))
        (root / folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def birdset(root: Path, name: str, train: list[dict], test: list[dict], *, rate: int = 32000) -> None:
    """A BirdSet configuration: ``train`` rows (file, seconds, ebird_code, ebird_code_multilabel, detected_events,
    event_cluster, length) and ``test`` rows (file, ebird_code_multilabel) as metadata parquet files indexed by
    file name; audio in ``<name>/extracted/<shard>/``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / name
    for part, rows in (("train", train), ("test_5s", test)):
        for i, row in enumerate(rows):
            write_wav(folder / "extracted" / f"{name}_{part}_shard_0001" / row["file"], row.get("seconds", 5.0), rate,
                      400.0 + 50 * i, seed=i)
        columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in ("file", "seconds")}
        table = pa.table({"filepath": [row["file"] for row in rows], **columns})
        metadata = {b"pandas": json.dumps({"index_columns": ["filepath"]}).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), folder / f"{name}_metadata_{part}.parquet")


def beans_zero_shard(path: Path, rows: list[dict]) -> None:
    """One BEANS-Zero shard of ``rows`` (id, dataset_name, label, rate, seconds, pitch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("dataset_name", pa.string()), ("audio", pa.list_(pa.float32())),
                        ("output", pa.string()), ("metadata", pa.string())])
    table = pa.Table.from_pylist([{"id": r["id"], "dataset_name": r["dataset_name"], "output": r["label"],
                                   "audio": tone(r["seconds"], r["rate"], r["pitch"], i).tolist(),
                                   "metadata": json.dumps({"sample_rate": r["rate"]})} for i, r in enumerate(rows)],
                                 schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
