"""What the agile tests (tests/test_agile_*.py) share: the synthetic recordings, one archive of them built once per
session (2 s windows, 1 s hop, the tiny fixture model), the true species of a window, and CSV helpers.

The fixtures are imported into each test module; their values are made once per session (``_once``), not once
per module, so the split test files cost no more than one file did.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURE

WINDOW, HOP = 2.0, 1.0
_MADE: dict[str, object] = {}


def _once(key: str, make):
    if key not in _MADE:
        _MADE[key] = make()
    return _MADE[key]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    from avex_hub.audio.synthetic import make_synthetic_dataset

    return _once("data", lambda: make_synthetic_dataset(
        tmp_path_factory.mktemp("syn") / "syn", num_species=3, individuals_per_species=2, clips_per_individual=4,
        num_long_recordings=2, long_recording_s=20.0, seed=3))


@pytest.fixture(scope="session")
def archive_path(data, tmp_path_factory) -> Path:
    """The long recordings, 2 s windows, 1 s hop: 2 x 19 windows. Tests copy it before changing it."""
    def make():
        from avex_hub import build_model
        from avex_hub.integrations import agile

        path = tmp_path_factory.mktemp("db") / "archive"
        agile.index_files(build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE), [data.root / "long"], path,
                          window_s=WINDOW, hop_s=HOP, progress=False)
        return path

    return _once("archive", make)


def copy_archive(archive_path: Path, target: Path) -> Path:
    shutil.copytree(archive_path, target)
    return target


def truth_labels(data, table) -> list[str]:
    """The species whose call overlaps each window most ('' for none), from the synthetic annotations."""
    events = list(csv.DictReader(open(data.annotations, encoding="utf-8")))
    out = []
    for f, s, e in zip(table["file"], table["start_s"], table["end_s"]):
        overlap = {}
        for r in events:
            if f.endswith(r["path"]):
                o = min(e, float(r["end_s"])) - max(s, float(r["start_s"]))
                if o > 0:
                    overlap[r["label"]] = overlap.get(r["label"], 0) + o
        out.append(max(overlap, key=overlap.get) if overlap else "")
    return out


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, rows: list[dict], fieldnames=None, *, encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def tiny_recordings(folder: Path, names=("a.wav", "b.wav"), seconds: float = 4.0, channels: int = 1,
                    seed: int = 0) -> list[Path]:
    """Short noise recordings at 16 kHz (3 windows of 2 s at 1 s hop for 4 s)."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        audio = (0.1 * rng.standard_normal((int(seconds * 16000), channels))).astype(np.float32)
        sf.write(folder / name, audio if channels > 1 else audio[:, 0], 16000)
        out.append(folder / name)
    return out


def consistency(db: Path) -> dict:
    """What must hold of every archive, read with plain sqlite3 and usearch (not the code under test): foreign-key
    violations, windows without a vector, vectors without a window."""
    import sqlite3

    import numpy as np
    from usearch.index import Index

    conn = sqlite3.connect(db / "hoplite.sqlite")
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    windows = {r[0] for r in conn.execute("SELECT id FROM windows")}
    conn.close()
    index = Index.restore(str(db / "usearch.index"), view=True)
    keys = set(np.asarray(index.keys).tolist()) if index is not None and len(index) else set()
    return {"violations": violations, "unembedded": sorted(windows - keys), "stale": sorted(keys - windows),
            "windows": len(windows)}


def labels_of(db: Path) -> set[tuple]:
    """``(file name, channel, start_s, end_s, label, label_type)`` of every label, read with plain sqlite3."""
    import sqlite3

    import numpy as np

    conn = sqlite3.connect(db / "hoplite.sqlite")
    named = "channel" in [c[1] for c in conn.execute("PRAGMA table_info(annotations)")]  # archives before version 2
    channel = "annotations.channel" if named else "NULL"
    rows = conn.execute(f"SELECT recordings.filename, {channel}, annotations.offsets, annotations.label, "
                        "annotations.label_type FROM annotations JOIN recordings ON "
                        "annotations.recording_id = recordings.id").fetchall()
    conn.close()
    names = {0: "negative", 1: "positive", 2: "uncertain"}
    return {(Path(f).name, c, *np.frombuffer(o, "<f8").round(6).tolist(), label, names[t])
            for f, c, o, label, t in rows}
