"""The agile commands (avex_hub.cli.agile): avex-hub index|search|label|train-classifier|detect|prune|export-labels|
import-labels; every failure one line and its exit code, checked before the work where it can be.
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import archive_path, data, read_rows, truth_labels, write_rows  # noqa: E402,F401 - data, archive_path: fixtures

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


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv, expected", [
    (["train-classifier", "--epochs", "0"], "--epochs: must be > 0, got 0"),
    (["detect", "--uncertain", "-5"], "--uncertain: must be >= 0, got -5"),
    (["detect", "--threshold", "1.5"], "--threshold: must be between 0 and 1 (exclusive), got 1.5"),
    (["search", "--top", "0"], "--top: must be > 0, got 0"),
    (["index", "--window", "-2"], "--window: must be > 0, got -2"),
    (["index", "--hop", "nan"], "--hop: must be > 0, got nan"),
    (["index", "--batch-size", "0"], "--batch-size: must be > 0, got 0"),
    (["index", "--workers", "-1"], "--workers: must be >= 0, got -1"),
])
def test_numeric_options_are_checked_before_any_work(archive_path, tmp_path, capsys, argv, expected):
    """On main `detect --uncertain -5` wrote the wrong rows and `--epochs 0` ended in a traceback."""
    required = {"train-classifier": ["--out", str(tmp_path / "p.safetensors")],
                "detect": ["--probe", str(tmp_path / "p.safetensors"), "--out", str(tmp_path / "d.csv")],
                "search": ["--query", "q.wav", "--out", str(tmp_path / "h.csv")], "index": ["rec/"]}[argv[0]]
    capsys.readouterr()
    assert main([*argv, "--db", str(archive_path), *required]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: argument {expected}")  # argparse's
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_outputs_that_cannot_be_written_are_refused_before_the_work(archive_path, tmp_path, capsys):
    """On main a folder or an unwritable --out failed after all the work, with a traceback."""
    (tmp_path / "afile").write_text("x")
    probe = tmp_path / "p.safetensors"
    for out, expected in ((tmp_path, "is a folder; give a file name"),
                          (tmp_path / "afile" / "p.safetensors", "--out: cannot write in")):
        capsys.readouterr()
        assert main(["train-classifier", "--db", str(archive_path), "--out", str(out)]) == 2
        assert expected in _one_error_line(capsys)
        assert main(["export-labels", "--db", str(archive_path), "--out", str(out)]) == 2
        assert expected in _one_error_line(capsys)
        assert main(["detect", "--db", str(archive_path), "--probe", str(probe), "--out", str(out)]) == 2
        assert expected in _one_error_line(capsys)
    assert main(["detect", "--db", str(archive_path), "--probe", str(probe), "--out", str(tmp_path / "d.csv"),
                 "--raven", str(tmp_path / "afile")]) == 2
    assert "--raven " + str(tmp_path / "afile") + " is a file; --raven takes a folder" in _one_error_line(capsys)
    assert main(["label", "--db", str(archive_path), str(tmp_path / "none.csv")]) == 2
    assert "labels file not found" in _one_error_line(capsys)
    assert main(["detect", "--db", str(archive_path), "--probe", str(probe), "--out", str(tmp_path / "d.csv")]) == 2
    assert "probe file not found" in _one_error_line(capsys)


def test_no_progress_keeps_the_summary_of_index_and_search(data, tmp_path, tiny_dir, capsys):
    """--no-progress drops the bar, not the run's summary: index's files, windows and skipped files and search's
    hits were printed only with the bar."""
    import re

    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(data.long_recordings[0], folder / "good.wav")
    db = tmp_path / "db"
    argv = ["index", str(folder), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
            "--checkpoint", str(tiny_dir)]
    assert main(argv) == 0  # the last line; a line about recordings without a known start may come before it
    assert re.fullmatch(rf"avex-hub: indexed 1 files \(19 windows\) in \d+\.\d s; 0 already in {re.escape(str(db))}",
                        capsys.readouterr().err.splitlines()[-1])
    assert main(argv) == 0
    assert re.fullmatch(rf"avex-hub: indexed 0 files \(0 windows\) in \d+\.\d s; 1 already in {re.escape(str(db))}",
                        capsys.readouterr().err.splitlines()[-1])
    hits = tmp_path / "hits.csv"
    assert main(["search", "--db", str(db), "--query", f"{folder / 'good.wav'}:0-2", "--top", "5", "--out", str(hits),
                 "--no-progress", "--checkpoint", str(tiny_dir)]) == 0
    assert capsys.readouterr().err == f"avex-hub: wrote 5 hits to {hits}\n"
    assert len(read_rows(hits)) == 5
