"""Labels (avex_hub.integrations.agile.labels, .widget): labelled hits CSVs and the notebook widget store the
user's verdicts in the archive.
"""

from __future__ import annotations

import csv
import shutil

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from agile_support import archive_path, data, read_rows, write_rows  # noqa: E402,F401 - data, archive_path: fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_labels_from_a_csv_live_in_the_database_and_relabelling_replaces(archive_path, tmp_path):
    shutil.copytree(archive_path, tmp_path / "db")
    archive = agile.Archive.open(tmp_path / "db")
    hits = agile.search_vectors(archive, archive.vectors([5])[0], top=4)
    path = agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Sweepus")
    rows = read_rows(path)
    assert [r["label"] for r in rows] == ["Sweepus"] * 4 and [r["label_type"] for r in rows] == [""] * 4
    rows[0]["label_type"], rows[1]["label_type"], rows[2]["label_type"], rows[3]["label"] = \
        "positive", "negative", "Positive", ""
    write_rows(path, rows)
    report = agile.add_labels_csv(archive, path)
    assert (report.stored, report.no_verdict, report.blank) == (3, [], 1)
    ids, targets, names = agile.labelled_windows(agile.Archive.open(tmp_path / "db", readonly=True))
    assert names == ["Sweepus"]
    assert dict(zip(ids.tolist(), targets[:, 0].tolist())) == {hits[0].window_id: 1.0, hits[1].window_id: 0.0,
                                                              hits[2].window_id: 1.0}
    agile.add_labels(archive, [(hits[0].window_id, "Sweepus", "negative")])
    ids, targets, _ = agile.labelled_windows(archive)
    assert dict(zip(ids.tolist(), targets[:, 0].tolist()))[hits[0].window_id] == 0.0
    assert len(archive.db.get_all_annotations()) == 3
    with pytest.raises(ValueError, match="label_type must be one of"):
        agile.add_labels(archive, [(hits[0].window_id, "Sweepus", "maybe")])


def test_label_widget_stores_the_choices(archive_path, tmp_path):
    pytest.importorskip("ipywidgets")
    shutil.copytree(archive_path, tmp_path / "db")
    archive = agile.Archive.open(tmp_path / "db")
    hits = agile.search_vectors(archive, archive.vectors([3])[0], top=3)
    widget = agile.label_widget(archive, hits, "Sweepus")
    widget.choices[0].value, widget.choices[2].value = "positive", "negative"
    assert widget.save() == 2
    ids, targets, names = agile.labelled_windows(archive)
    assert names == ["Sweepus"] and dict(zip(ids.tolist(), targets[:, 0].tolist())) == {
        hits[0].window_id: 1.0, hits[2].window_id: 0.0}
