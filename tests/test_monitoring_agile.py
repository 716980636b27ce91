"""Monitoring on the agile loop's scores: a ``detect`` CSV reviewed, calibrated, and the same verdicts stored in the
archive as labels (issue 20: "it works the same on the agile detect scores"; "reviews also feed the agile
database")."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.cli import EXIT_OK, main  # noqa: E402
from avex_hub.integrations import agile  # noqa: E402
from agile_support import archive_path, copy_archive, data, read_rows, truth_labels, write_rows  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_detect_scores_reviewed_calibrated_and_stored_as_labels(data, archive_path, tmp_path):
    db = copy_archive(archive_path, tmp_path / "archive")
    table = agile.Archive.open(db, readonly=True).window_table()
    truth = truth_labels(data, table)
    species = data.labels[0]
    hits = [{"file": f, "channel": c, "start_s": s, "end_s": e, "label": species,
             "label_type": "positive" if t == species else "negative"}
            for f, c, s, e, t in zip(table["file"], table["channel"], table["start_s"], table["end_s"], truth)]
    write_rows(tmp_path / "hits.csv", hits[::2])  # half the windows labelled by hand
    assert main(["label", "--db", str(db), str(tmp_path / "hits.csv")]) == EXIT_OK
    probe = tmp_path / "probe.safetensors"
    assert main(["train-classifier", "--db", str(db), "--out", str(probe)]) == EXIT_OK
    detections = tmp_path / "detections.csv"
    assert main(["detect", "--db", str(db), "--probe", str(probe), "--out", str(detections)]) == EXIT_OK

    review = tmp_path / "review"
    assert main(["review", str(detections), "--probe", str(probe), "--out", str(review), "--bins", "4",
                 "--per-bin", "3"]) == EXIT_OK
    sheet = read_rows(review / "review.csv")
    truth_of = {(f, float(s)): t for f, s, t in zip(table["file"], table["start_s"], truth)}
    for row in sheet:
        row["verdict"] = "yes" if truth_of[(row["file"], float(row["start_s"]))] == row["label"] else "no"
    sheet[0]["verdict"] = "unsure"
    write_rows(review / "review.csv", sheet)
    assert main(["calibrate", str(review / "review.csv"), "--target-precision", "0.8", "--min-reviews", "2",
                 "--out", str(tmp_path / "thresholds.json"), "--labels", str(tmp_path / "labels.csv")]) == EXIT_OK
    source = json.loads((tmp_path / "thresholds.json").read_text())["source"]
    assert source["probe_sha256"] is not None  # fitted to this probe's scores

    assert main(["label", "--db", str(db), str(tmp_path / "labels.csv")]) == EXIT_OK
    assert main(["export-labels", "--db", str(db), "--out", str(tmp_path / "export.csv")]) == EXIT_OK
    stored = {(r["file"], float(r["start_s"]), r["label"]): r["label_type"] for r in read_rows(tmp_path / "export.csv")}
    kinds = {"yes": "positive", "no": "negative", "unsure": "uncertain"}
    for row in sheet:  # each verdict is the archive's label of that window now (relabelling the hand labels)
        assert stored[(row["file"], float(row["start_s"]), row["label"])] == kinds[row["verdict"]]


def test_index_stores_start_times_and_sites_that_detect_search_and_export_carry(tmp_path, capsys):
    """avex-hub index --deployments --timezone: each recording's start (AudioMoth comment; a Song Meter name in
    the deployment's local time; none for a plain file, its columns left empty) and site stored in the archive, and
    every window of the detect CSV, the search hits and the labels export in absolute time from them. A re-index
    without the options keeps them; with another deployments table, the files already there get the new sites."""
    import sqlite3

    from conftest import FIXTURE
    from recorder_files import audiomoth_wav, guano_wav, plain_wav

    rec, db = tmp_path / "rec", tmp_path / "db"
    audiomoth_wav(rec / "north" / "20260601_050000.WAV", "Recorded at 05:00:00 01/06/2026 (UTC+2) by AudioMoth "
                  "24F319055FDF1C41 at medium gain while battery was 4.2V", seconds=4.0, rate=16000)
    guano_wav(rec / "south" / "S4U01234_20260602_060000.wav", {"Timestamp": "2026-06-02T06:00:00"}, seconds=4.0,
              rate=16000)  # local time without an offset: --timezone gives it
    plain_wav(rec / "other" / "unknown.wav", seconds=4.0)
    (tmp_path / "deployments.csv").write_text("folder,site,latitude,longitude\nrec/north,N,52.5,13.4\n"
                                              "rec/south,S,52.4,13.3\n", encoding="utf-8")
    index = ["index", str(rec), "--db", str(db), "--checkpoint", str(FIXTURE), "--window", "2", "--hop", "1",
             "--no-progress"]
    assert main([*index, "--deployments", str(tmp_path / "deployments.csv"), "--timezone", "Europe/Berlin"]) \
        == EXIT_OK
    assert "1 of 3 recordings have no known start (their time columns stay empty); first: " in \
        capsys.readouterr().err

    def stored():
        conn = sqlite3.connect(db / "hoplite.sqlite")
        rows = conn.execute("SELECT filename, datetime, site, latitude, longitude FROM recordings").fetchall()
        conn.close()
        return {r[0].rsplit("/", 1)[-1]: r[1:] for r in rows}

    placed = {"20260601_050000.WAV": ("2026-06-01T05:00:00.000+02:00", "N", 52.5, 13.4),
              "S4U01234_20260602_060000.wav": ("2026-06-02T06:00:00.000+02:00", "S", 52.4, 13.3),
              "unknown.wav": (None, None, None, None)}
    assert stored() == placed

    table = agile.Archive.open(db, readonly=True).window_table()
    hits = [{"file": f, "channel": c, "start_s": s, "end_s": e, "label": "Sweepus",
             "label_type": "positive" if "north" in f else "negative"}
            for f, c, s, e in zip(table["file"], table["channel"], table["start_s"], table["end_s"])]
    write_rows(tmp_path / "hits.csv", hits)
    assert main(["label", "--db", str(db), str(tmp_path / "hits.csv")]) == EXIT_OK
    assert main(["train-classifier", "--db", str(db), "--out", str(tmp_path / "probe.safetensors")]) == EXIT_OK
    assert main(["detect", "--db", str(db), "--probe", str(tmp_path / "probe.safetensors"), "--out",
                 str(tmp_path / "detections.csv")]) == EXIT_OK
    north = str((rec / "north" / "20260601_050000.WAV").resolve())

    def times(rows):
        return {(r["file"].rsplit("/", 1)[-1], float(r["start_s"])): (r["start_time"], r["end_time"]) for r in rows}

    expected = {**{("20260601_050000.WAV", s): (f"2026-06-01T05:00:0{s:.0f}.000+02:00",
                                                f"2026-06-01T05:00:0{s + 2:.0f}.000+02:00") for s in (0.0, 1.0, 2.0)},
                **{("S4U01234_20260602_060000.wav", s): (f"2026-06-02T06:00:0{s:.0f}.000+02:00",
                                                         f"2026-06-02T06:00:0{s + 2:.0f}.000+02:00")
                   for s in (0.0, 1.0, 2.0)},
                **{("unknown.wav", s): ("", "") for s in (0.0, 1.0, 2.0)}}
    detections = read_rows(tmp_path / "detections.csv")
    assert list(detections[0])[:10] == ["window_id", "file", "channel", "start_s", "end_s", "start_time", "end_time",
                                        "site", "latitude", "longitude"]
    assert times(detections) == expected
    assert {(r["file"].rsplit("/", 1)[-1], r["site"], r["latitude"]) for r in detections} == {
        ("20260601_050000.WAV", "N", "52.5"), ("S4U01234_20260602_060000.wav", "S", "52.4"), ("unknown.wav", "", "")}
    assert main(["search", "--db", str(db), "--query", f"{north}:0-2", "--top", "9", "--exact", "--out",
                 str(tmp_path / "found.csv"), "--no-progress"]) == EXIT_OK
    found = read_rows(tmp_path / "found.csv")
    assert len(found) == 9 and times(found) == expected
    assert main(["export-labels", "--db", str(db), "--out", str(tmp_path / "labels.csv")]) == EXIT_OK
    assert times(read_rows(tmp_path / "labels.csv")) == expected

    assert main(index) == EXIT_OK and stored() == placed  # nothing asked: what is stored stays
    (tmp_path / "deployments.csv").write_text("folder,site,latitude,longitude\nrec/north,N2,50.0,10.0\n",
                                              encoding="utf-8")
    assert main([*index, "--deployments", str(tmp_path / "deployments.csv")]) == EXIT_OK
    assert stored() == {"20260601_050000.WAV": ("2026-06-01T05:00:00.000+02:00", "N2", 50.0, 10.0),
                        "S4U01234_20260602_060000.wav": (None, None, None, None),  # no --timezone this time
                        "unknown.wav": (None, None, None, None)}
