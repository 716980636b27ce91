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
