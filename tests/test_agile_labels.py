"""Labels (avex_hub.integrations.agile.labels, .widget): labelled hits CSVs and the notebook widget store the
user's verdicts in the archive.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import HOP, WINDOW, archive_path, copy_archive, data, labels_of, read_rows, tiny_recordings, \
    write_rows  # noqa: E402,F401 - data, archive_path: fixtures

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


# -- a label row names its window by archive and coordinates (issue 26, defects 3, 4 and 5) ------------------------
def test_a_hits_csv_of_another_archive_is_refused_by_line_and_stores_nothing(model, data, archive_path, tmp_path,
                                                                            capsys):
    """Defect 3: on main a hits CSV of another database put labels on unrelated windows (by window_id), exit 0."""
    db = copy_archive(archive_path, tmp_path / "db")
    other = tmp_path / "other"
    agile.index_files(model, [data.long_recordings[1]], other, window_s=WINDOW, hop_s=HOP, progress=False)
    theirs = agile.Archive.open(other, readonly=True)
    hits = agile.search_vectors(theirs, theirs.vectors([3])[0], top=3)
    path = agile.write_hits_csv(hits, tmp_path / "theirs.csv", label="Sweepus")
    rows = read_rows(path)
    for r in rows:
        r["label_type"] = "positive"
    write_rows(path, rows)
    before = labels_of(db)
    capsys.readouterr()
    assert main(["label", "--db", str(db), str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"avex-hub: error: {path}: 3 rows refused, nothing stored from this "
                                               f"file: line 2: the row is from archive {theirs.identity}")
    assert labels_of(db) == before
    # The same rows without the archive column (an old CSV) are matched on their coordinates: the windows of that
    # file are in this archive too (same recordings, same windows), so they are stored there, and only there.
    for r in rows:
        r.pop("archive_id")
    write_rows(path, rows)
    report = agile.add_labels_csv(agile.Archive.open(db), path)
    assert report.stored == 3
    assert labels_of(db) == {(Path(h.file).name, h.channel, round(h.start_s, 6), round(h.end_s, 6), "Sweepus",
                              "positive") for h in hits}
    # Coordinates that name no window are refused by line, with the reason.
    rows[1]["start_s"] = str(float(rows[1]["start_s"]) + 0.5)
    rows[2]["file"] = "/nowhere/x.wav"
    write_rows(path, rows)
    with pytest.raises(agile.LabelsFileError, match=r"2 rows refused, nothing stored from this file: line 3: no "
                                                    r"window .* line 4: file '/nowhere/x.wav' is not in"):
        agile.add_labels_csv(agile.Archive.open(db), path)


def test_labels_of_a_csv_written_before_a_re_index_land_on_the_same_windows(model, data, tmp_path):
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    archive = agile.Archive.open(db)
    hits = agile.search_vectors(archive, archive.vectors([4])[0], top=6)
    path = agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Sweepus")
    os.utime(folder / "a.wav", ns=(10**18, 10**18))
    os.utime(folder / "b.wav", ns=(10**18, 10**18))
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)  # every window gets a new id
    assert not set(agile.Archive.open(db).window_table()["window_id"]) & {h.window_id for h in hits}
    rows = read_rows(path)
    for r in rows:
        r["label_type"] = "negative"
    write_rows(path, rows)
    assert agile.add_labels_csv(agile.Archive.open(db), path).stored == 6
    assert labels_of(db) == {(Path(h.file).name, h.channel, round(h.start_s, 6), round(h.end_s, 6), "Sweepus",
                              "negative") for h in hits}


def test_a_prefilled_label_without_label_type_is_no_verdict(archive_path, tmp_path, capsys):
    """Defect 4: `search --label` and `detect --uncertain` prefill the label; on main every unedited row became a
    positive when the file was labelled as written."""
    db = copy_archive(archive_path, tmp_path / "db")
    archive = agile.Archive.open(db)
    hits = agile.search_vectors(archive, archive.vectors([5])[0], top=5)
    path = agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Sweepus")
    rows = read_rows(path)
    rows[2]["label_type"] = "negative"
    write_rows(path, rows)
    capsys.readouterr()
    assert main(["label", "--db", str(db), str(path)]) == 0
    err = capsys.readouterr().err.strip()
    assert err == (f"avex-hub: {path}: stored 1 labels; 4 rows name a label but no label_type (lines 2, 3, 5, 6): "
                   "nothing stored for them, write positive, negative or uncertain there")
    assert labels_of(db) == {(Path(hits[2].file).name, -1, round(hits[2].start_s, 6), round(hits[2].end_s, 6),
                              "Sweepus", "negative")}


def test_with_channels_all_a_label_is_the_channel_s_own(model, tmp_path):
    """Defect 5: on main labelling channel 1 of a window labelled channel 0 too, and a later negative on one
    channel flipped both."""
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder, ("stereo.wav",), channels=2)
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, channels="all", progress=False)
    archive = agile.Archive.open(db)
    table = archive.window_table()
    assert sorted(set(table["channel"].tolist())) == [0, 1]
    first = table["start_s"] == 0
    ch0, ch1 = (int(table["window_id"][first & (table["channel"] == c)][0]) for c in (0, 1))
    hits = [h for h in agile.search_vectors(archive, archive.vectors([ch1])[0], top=len(archive), exact=True)
            if h.window_id in (ch0, ch1)]
    path = agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Sweepus")
    rows = read_rows(path)
    for r in rows:
        r["label_type"] = "positive" if int(r["channel"]) == 1 else ""
    write_rows(path, rows)
    agile.add_labels_csv(archive, path)
    ids, targets, _ = agile.labelled_windows(archive)
    assert dict(zip(ids.tolist(), targets[:, 0].tolist())) == {ch1: 1.0}
    agile.add_labels(archive, [(ch0, "Sweepus", "negative")])
    ids, targets, _ = agile.labelled_windows(archive)
    assert dict(zip(ids.tolist(), targets[:, 0].tolist())) == {ch0: 0.0, ch1: 1.0}


# -- the labels file: encodings -------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_labels_file_with_a_byte_order_mark_is_read(archive_path, tmp_path, encoding):
    """Excel's "CSV UTF-8" starts with a byte-order mark; on main it was refused as missing its columns."""
    db = copy_archive(archive_path, tmp_path / "db")
    archive = agile.Archive.open(db)
    hits = agile.search_vectors(archive, archive.vectors([5])[0], top=2)
    rows = read_rows(agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Grünfink"))
    for r in rows:
        r["label_type"] = "positive"
    write_rows(tmp_path / "bom.csv", rows, encoding=encoding)
    assert agile.add_labels_csv(archive, tmp_path / "bom.csv").stored == 2
    assert {x[4] for x in labels_of(db)} == {"Grünfink"}


def test_a_labels_file_in_another_encoding_is_refused_naming_it(archive_path, tmp_path, capsys):
    db = copy_archive(archive_path, tmp_path / "db")
    archive = agile.Archive.open(db)
    rows = read_rows(agile.write_hits_csv(agile.search_vectors(archive, archive.vectors([5])[0], top=2),
                                          tmp_path / "hits.csv", label="Grünfink"))
    rows[1]["label_type"] = "positive"
    write_rows(tmp_path / "latin.csv", rows, encoding="latin-1")
    capsys.readouterr()
    assert main(["label", "--db", str(db), str(tmp_path / "latin.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latin.csv: line 2 is not valid utf-8 text (byte 0xfc" in err[0]
    assert "it looks like Latin-1 / Windows-1252" in err[0] and "save the labels file as UTF-8" in err[0]
    assert labels_of(db) == set()


# -- export and import ------------------------------------------------------------------------------------------------
def test_export_and_import_round_trip_every_label(model, tmp_path, capsys):
    """Every annotation (channels, types, provenance, offsets that are not a window of the archive) goes out to a
    CSV and back into another archive of the same recordings, from Python and from the command line."""
    folder = tmp_path / "rec"
    tiny_recordings(folder, ("a.wav", "b.wav"), channels=2)
    first, second = tmp_path / "first", tmp_path / "second"
    for db in (first, second):
        agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, channels="all", progress=False)
    archive = agile.Archive.open(first)
    table = archive.window_table()
    kinds = ["positive", "negative", "uncertain"]
    agile.add_labels(archive, [(int(w), ("Sweepus", "Trillus")[i % 2], kinds[i % 3])
                               for i, w in enumerate(table["window_id"][:9])])
    with archive.writing():  # an annotation hoplite's own tools may write: any offsets, every channel
        recording = archive.recordings()[table["file"][0]]
        archive.db.insert_annotation(recording, [0.25, 1.125], "Sweepus", agile.LABEL_TYPES["positive"],
                                     provenance="hoplite notebook", channel=None)
    assert agile.export_labels(archive, tmp_path / "labels.csv") == 10
    assert agile.import_labels(agile.Archive.open(second), tmp_path / "labels.csv").stored == 10

    def exported(db, name):
        capsys.readouterr()
        assert main(["export-labels", "--db", str(db), "--out", str(tmp_path / name)]) == 0
        return [{k: v for k, v in r.items() if k != "archive_id"} for r in read_rows(tmp_path / name)]

    assert exported(second, "again.csv") == exported(first, "first.csv")
    assert len(exported(first, "first.csv")) == 10
    assert main(["import-labels", "--db", str(second), str(tmp_path / "labels.csv")]) == 0  # again: replaced
    assert exported(second, "again.csv") == exported(first, "first.csv")
    ids, targets, names = agile.labelled_windows(agile.Archive.open(second))
    assert names == ["Sweepus", "Trillus"]
    # a file not in the archive: refused whole
    rows = read_rows(tmp_path / "labels.csv")
    rows[4]["file"] = str(tmp_path / "elsewhere.wav")
    write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(agile.LabelsFileError, match=r"1 rows refused, nothing stored from this file: line 6: file"):
        agile.import_labels(agile.Archive.open(tmp_path / "second"), tmp_path / "bad.csv")


def test_the_widget_says_when_audio_is_gone(model, tmp_path):
    """On main a hit whose audio was deleted broke the widget (the player read the file)."""
    pytest.importorskip("ipywidgets")
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    archive = agile.Archive.open(db)
    hits = agile.search_vectors(archive, archive.vectors([1])[0], top=6)
    os.remove(folder / "b.wav")
    with pytest.warns(agile.ArchiveNotice, match="1 files of the hits are no longer where they were indexed"):
        widget = agile.label_widget(archive, hits, "Sweepus")
    rows = widget.children[1:-1]
    gone = [h.file.endswith("b.wav") for h in hits]
    assert ["(audio missing)" in row.children[0].value for row in rows] == gone
    assert [len(row.children) for row in rows] == [2 if g else 3 for g in gone]  # no player where the audio is gone
    for choice in widget.choices:
        choice.value = "negative"
    assert widget.save() == 6  # the labels of a missing file are still the user's
    assert len(labels_of(db)) == 6
