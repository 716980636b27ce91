"""The agile commands (avex_hub.cli_agile): avex-hub index|search|label|train-classifier|detect.
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import data, read_rows, truth_labels, write_rows  # noqa: E402,F401 - data, archive_path: fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_runs_the_whole_loop(data, tmp_path, tiny_dir):
    ck = ["--checkpoint", str(tiny_dir)]
    db = tmp_path / "archive"
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
                 *ck]) == 0
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
                 *ck]) == 0  # nothing new
    assert len(agile.Archive.open(db, readonly=True)) == 38
    events = list(csv.DictReader(open(data.annotations, encoding="utf-8")))
    species = data.labels[0]
    first = next(r for r in events if r["label"] == species)
    query = f"{data.root / first['path']}:{float(first['start_s']):.3f}-{float(first['end_s']):.3f}"
    hits_csv = tmp_path / "hits.csv"
    assert main(["search", "--db", str(db), "--query", query, "--top", "38", "--out", str(hits_csv), "--raven",
                 str(tmp_path / "hits"), "--label", species, "--no-progress", *ck]) == 0
    rows = list(csv.DictReader(open(hits_csv, encoding="utf-8")))
    assert len(rows) == 38 and [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    assert len(list((tmp_path / "hits").glob("*.selections.txt"))) == 2
    # The user labels the first 30 hits: positive where the species calls, negative elsewhere; the last 8 rows
    # keep the prefilled label and no label_type (no verdict: nothing stored).
    table = agile.Archive.open(db, readonly=True).window_table()
    truth = dict(zip(table["window_id"].tolist(), truth_labels(data, table)))
    for r in rows[:30]:
        r["label_type"] = "positive" if truth[int(r["window_id"])] == species else "negative"
    write_rows(hits_csv, rows)
    assert main(["label", "--db", str(db), str(hits_csv)]) == 0
    assert len(agile.labelled_windows(agile.Archive.open(db, readonly=True))[0]) == 30
    probe = tmp_path / "probe.safetensors"
    assert main(["train-classifier", "--db", str(db), "--out", str(probe)]) == 0
    out = tmp_path / "detections.csv"
    assert main(["detect", "--db", str(db), "--probe", str(probe), "--out", str(out), "--raven", str(tmp_path / "t"),
                 "--uncertain", "5"]) == 0
    scored = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(scored) == 38 and list(scored[0])[-1] == species
    above = sum(float(r[species]) >= 0.5 for r in scored)
    tables = list((tmp_path / "t").glob("*.selections.txt"))
    assert sum(len(t.read_text().splitlines()) - 1 for t in tables) == above
    uncertain = read_rows(out.with_suffix(".uncertain.csv"))
    assert len(uncertain) == 5 and not {int(r["window_id"]) for r in uncertain} & {int(r["window_id"]) for r in rows[:30]}
    # Another database's settings: a usage error naming both.
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "3", "--no-progress", *ck]) == 2
    assert main(["search", "--db", str(tmp_path / "none"), "--query", query, "--out", str(hits_csv), *ck]) == 2


def test_cli_index_lists_unreadable_inputs_and_keeps_the_others(data, tmp_path, tiny_dir):
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(data.long_recordings[0], folder / "good.wav")
    (folder / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt not really")
    db = tmp_path / "db"
    argv = ["index", str(folder), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
            "--checkpoint", str(tiny_dir)]
    assert main(argv) == 3
    failures = list(csv.DictReader(open(db / "failures.csv", encoding="utf-8")))
    assert [os.path.basename(r["path"]) for r in failures] == ["broken.wav"]
    archive = agile.Archive.open(db, readonly=True)
    assert len(archive) == 19 and set(archive.window_table()["file"]) == {str(folder / "good.wav")}
    (folder / "broken.wav").unlink()
    assert main(argv) == 0 and not (db / "failures.csv").exists()
