"""The archive (avex_hub.integrations.agile.archive, .schema, .lock, .settings): settings recorded and checked,
foreign keys on for every connection, the check and repair on open, the versioned schema and its upgrade of an
archive written before it (tests/fixtures/agile-v1), one writer at a time, damaged files refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import HOP, WINDOW, archive_path, consistency, copy_archive, data, labels_of, tiny_recordings  # noqa: E402,F401 - data, archive_path: fixtures

V1 = Path(__file__).parent / "fixtures" / "agile-v1"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_other_settings_weights_and_probes_are_refused(model, data, archive_path, tmp_path, tiny_dir):
    with pytest.raises(agile.SettingsMismatchError, match=r"window_s: database 2.0, given 3.0"):
        agile.index_files(model, [data.root / "long"], archive_path, window_s=3.0, hop_s=HOP, progress=False)
    archive = agile.Archive.open(archive_path, readonly=True)
    from avex_hub import build_model
    other = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    other.weights_sha256 = "f" * 64
    query = agile.Query(str(data.long_recordings[0]), 1.0, 2.0)
    with pytest.raises(agile.SettingsMismatchError, match=f"database {model.weights_sha256!r}, given {'f' * 64!r}"):
        agile.search(archive, other, [query])
    # A probe trained on layer 1 embeddings is refused on the last layer's database, naming both.
    layer1 = tmp_path / "layer1"
    agile.index_files(model, [data.long_recordings[0]], layer1, window_s=WINDOW, hop_s=HOP, layer=1, progress=False)
    small = agile.Archive.open(layer1)
    table = small.window_table()
    agile.add_labels(small, [(int(w), "x", "positive" if i % 2 else "negative")
                             for i, w in enumerate(table["window_id"])])
    probe = agile.train_classifier(small, tmp_path / "p.safetensors", epochs=5)
    with pytest.raises(agile.SettingsMismatchError, match=r"layers: probe \(1,\), database \(3,\)"):
        agile.detect(archive, probe)


def test_vectors_left_by_a_removal_stopped_before_the_index_save_are_removed(model, data, tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    for p in data.long_recordings[:2]:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "db"
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    archive = agile.Archive.open(db)
    # A replaced file's rows were removed and SQLite committed; the run stopped before the index was saved.
    cursor = archive.db.db.cursor()
    cursor.execute("SELECT id FROM recordings ORDER BY id DESC LIMIT 1")
    (last,) = cursor.fetchone()
    cursor.execute("DELETE FROM windows WHERE recording_id = ?", (last,))
    cursor.execute("DELETE FROM recordings WHERE id = ?", (last,))
    archive.db.db.commit()
    del archive
    with pytest.warns(agile.ArchiveNotice, match="19 vectors belong to no window; the next command that writes"):
        assert len(agile.Archive.open(db, readonly=True)) == 38  # 19 of them now belong to no window
    with pytest.warns(agile.ArchiveNotice, match="repaired: 19 vectors that belonged to no window removed"):
        report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert len(report.added) == 1  # the file is embedded again, under new window ids
    archive = agile.Archive.open(db, readonly=True)
    window_ids = archive.window_table()["window_id"]
    assert len(archive) == 38 and set(np.asarray(archive.db.ui.keys).tolist()) == set(window_ids.tolist())
    query = archive.vectors(window_ids[:1])
    hits = agile.search_vectors(archive, query, top=38, exact=True)  # every stored vector resolves to a window
    assert len(hits) == 38 and hits[0].window_id == window_ids[0]


# -- foreign keys, and the defects they caused (issue 26, 1 and 2) ------------------------------------------------
def test_foreign_keys_are_on_for_every_connection(archive_path, tmp_path):
    db = copy_archive(archive_path, tmp_path / "db")
    for readonly in (True, False):
        archive = agile.Archive.open(db, readonly=readonly)
        assert archive.db.db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        if not readonly:
            with archive.writing():
                assert archive.db.db.execute("PRAGMA foreign_keys").fetchone() == (1,)


def _index(model, folder, db):
    return agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)


def test_a_changed_file_indexed_in_later_sessions_keeps_its_labels(model, tmp_path):
    """Issue 26, defect 1: on main the second index after a touch left orphans and every later run failed with
    "Recording id not found"; the touched file's labels were lost."""
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    _index(model, folder, db)
    archive = agile.Archive.open(db)
    table = archive.window_table()
    b = [int(w) for w, f in zip(table["window_id"], table["file"]) if f.endswith("b.wav")]
    agile.add_labels(archive, [(b[0], "Sweepus", "positive"), (b[1], "Sweepus", "negative")])
    given = labels_of(db)
    del archive
    for session in range(3):  # each run opens the database anew, as a new process does
        os.utime(folder / "b.wav", ns=(10**18 + session, 10**18 + session))
        report = _index(model, folder, db)
        assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}
        assert labels_of(db) == given
        assert [Path(p).name for p in report.changed] == ["b.wav"] and report.skipped
    ids, targets, names = agile.labelled_windows(agile.Archive.open(db, readonly=True))
    assert names == ["Sweepus"] and sorted(targets[:, 0].tolist()) == [0.0, 1.0]


def test_the_repair_after_a_stop_holds_for_every_later_run(model, tmp_path, monkeypatch):
    """Issue 26, defect 2: a stop between the SQLite commit and the index save; on main the next run repaired
    and the run after failed."""
    from usearch.index import Index

    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder, ("a.wav",))
    _index(model, folder, db)
    archive = agile.Archive.open(db)
    agile.add_labels(archive, [(int(archive.window_table()["window_id"][0]), "Sweepus", "positive")])
    del archive
    tiny_recordings(folder, ("b.wav",), seed=1)
    os.utime(folder / "a.wav", ns=(10**18, 10**18))

    def stopped(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        _index(model, folder, db)
    monkeypatch.undo()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _index(model, folder, db)  # repairs, then embeds again what lost its vectors
        for _ in range(2):
            report = _index(model, folder, db)
            assert report.added == [] and len(report.skipped) == 2
            assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}
    assert {(f, label, kind) for f, _, _, _, label, kind in labels_of(db)} == {("a.wav", "Sweepus", "positive")}
    lines = sorted(str(w.message).split("repaired: ")[1] for w in said if w.category is agile.ArchiveNotice)
    assert len(lines) == 2 and lines[0].startswith("2 recordings had windows without vectors")  # the stopped run's
    assert lines[1] == "3 vectors that belonged to no window removed"  # a.wav's windows before it changed


def test_orphans_left_by_an_old_run_are_repaired_and_their_labels_kept_aside(archive_path, tmp_path):
    db = copy_archive(archive_path, tmp_path / "db")
    archive = agile.Archive.open(db)
    window = int(archive.window_table()["window_id"][0])
    agile.add_labels(archive, [(window, "Sweepus", "positive")])
    archive.close()
    conn = sqlite3.connect(db / "hoplite.sqlite")  # what main did: remove a recording without foreign keys
    conn.execute("DELETE FROM recordings WHERE id = (SELECT recording_id FROM windows WHERE id = ?)", (window,))
    conn.commit()
    conn.close()
    assert len(consistency(db)["violations"]) == 20  # 19 windows, 1 label
    with pytest.warns(agile.ArchiveNotice, match="1 labels belong to a recording that is no longer in the archive"):
        archive = agile.Archive.open(db)
    with pytest.warns(agile.ArchiveNotice) as said:
        with archive.writing():
            pass
    lines = [str(w.message) for w in said]
    kept = next(db.glob("orphaned-labels-*.csv"))
    assert any(f"1 labels belonged to recordings no longer in the archive" in x and str(kept) in x for x in lines)
    assert any("19 windows of recordings no longer in the archive removed" in x for x in lines)
    rows = list(csv_rows(kept))
    assert [(r["label"], r["label_type"]) for r in rows] == [("Sweepus", "1")]
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 19}


def csv_rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


# -- the versioned schema ---------------------------------------------------------------------------------------
def test_an_archive_written_before_schema_versions_is_upgraded_in_place(tmp_path):
    """tests/fixtures/agile-v1 was written by main's agile.py (tests/fixtures/make_agile_v1_archive.py), with the
    orphans its foreign-key bug left. Opening it upgrades it after a backup, repairs it, keeps every label."""
    db = tmp_path / "db"
    shutil.copytree(V1, db)
    expected = json.loads((V1 / "expected.json").read_text())
    with pytest.warns(agile.ArchiveNotice) as said:
        archive = agile.Archive.open(db)
    lines = [str(w.message) for w in said]
    assert lines[0] == (f"upgraded {db} from schema version 1 to {agile.schema.VERSION} (the previous SQLite file is "
                        "kept as hoplite.sqlite.v1.backup)")
    shutil.copytree(V1, tmp_path / "original")  # read from a copy: SQLite writes -shm/-wal beside what it opens
    assert _dump(db / "hoplite.sqlite.v1.backup") == _dump(tmp_path / "original" / "hoplite.sqlite")
    conn = sqlite3.connect(db / "hoplite.sqlite")
    record = json.loads(conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub_schema'").fetchone()[0])
    assert record["version"] == agile.schema.VERSION and len(record["archive_id"]) == 32
    assert archive.identity == record["archive_id"]
    assert conn.execute("SELECT channel FROM annotations").fetchall() == [(-1,)] * 3  # a mix archive: channel -1
    conn.close()
    # a writer repairs what the old code left: b.wav's old windows and its label, kept aside in a CSV
    with pytest.warns(agile.ArchiveNotice) as said:
        with archive.writing():
            pass
    lines = [str(w.message) for w in said]
    assert any("1 labels belonged to recordings no longer in the archive" in x for x in lines)
    assert any(f"{expected['orphan_windows']} windows of recordings no longer in the archive removed" in x
               for x in lines)
    orphaned = list(csv_rows(next(db.glob("orphaned-labels-*.csv"))))
    assert [(r["label"], int(r["label_type"])) for r in orphaned] == [("Sweepus", 1)]
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": expected["windows"]}
    assert labels_of(db) == {(Path(x["file"]).name, -1, *x["offsets"], x["label"], x["type"])
                             for x in expected["labels"]}
    ids, targets, names = agile.labelled_windows(archive)
    assert names == ["Sweepus"] and targets[:, 0].tolist() == [1.0, 0.0]
    # Opening again does nothing more; the audio of the fixture is gone, and prune takes the labels out first.
    assert archive.missing_files() == sorted(expected["recordings"])
    report = agile.prune(archive)
    assert sorted(report.removed) == sorted(expected["recordings"]) and report.windows == expected["windows"]
    pruned = list(csv_rows(report.labels_file))
    assert [(r["file"], r["start_s"], r["end_s"], r["label_type"]) for r in pruned] == [
        (x["file"], "0", "2", "positive") if x["type"] == "positive" else (x["file"], "1", "3", "negative")
        for x in expected["labels"]]
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 0}
    assert sorted(p.name for p in db.glob("hoplite.sqlite.v*")) == ["hoplite.sqlite.v1.backup"]


def test_an_archive_of_version_2_gets_the_start_times_of_the_files_still_there(tmp_path):
    """tests/fixtures/agile-v2 was written by the code before version 3 (tests/fixtures/make_agile_v2_archive.py).
    The upgrade keeps every recording, window and label with its id and the archive's identity, stores the start of
    the AudioMoth file that is still there (its comment's time and offset), and leaves NULL the start of a file
    without one and of a file that is gone (never a guess); the labels export then carries each label's times."""
    import csv

    from recorder_files import audiomoth_wav, plain_wav

    v2 = Path(__file__).parent / "fixtures" / "agile-v2"
    expected = json.loads((v2 / "expected.json").read_text())
    db, rec = tmp_path / "db", tmp_path / "rec"
    shutil.copytree(v2, db)
    audiomoth_wav(rec / "north" / "20260601_050000.WAV", "Recorded at 05:00:00 01/06/2026 (UTC+2) by AudioMoth "
                  "24F319055FDF1C41 at medium gain while battery was 4.2V", seconds=4.0, rate=16000)
    plain_wav(rec / "plain" / "unknown.wav", seconds=4.0)  # gone/20260603_050000.WAV is not written back
    conn = sqlite3.connect(db / "hoplite.sqlite")  # the files are where the archive says (the fixture's folder is gone)
    conn.execute("UPDATE recordings SET filename = ? || substr(filename, ?)", (str(rec.resolve()),
                                                                               len(expected["folder"]) + 1))
    conn.commit()
    conn.close()

    with pytest.warns(agile.ArchiveNotice) as said:
        archive = agile.Archive.open(db)
    lines = [str(w.message) for w in said]
    assert lines == [f"upgraded {db} from schema version 2 to 3 (the previous SQLite file is kept as "
                     "hoplite.sqlite.v2.backup)", "1 of 3 recordings got their start time from their files",
                     "1 recordings' audio is not where it was indexed: their start stays unknown until `avex-hub "
                     "index` sees them again"]
    assert agile.schema.VERSION == 3 and archive.identity == expected["archive_id"]
    conn = sqlite3.connect(db / "hoplite.sqlite")
    rows = conn.execute("SELECT id, filename, datetime, site, latitude, longitude FROM recordings ORDER BY id")
    folder = str(rec.resolve())
    assert [tuple(r) for r in rows] == sorted(
        (rid, f"{folder}/{name}", "2026-06-01T05:00:00.000+02:00" if name.startswith("north") else None, None, None,
         None) for name, rid in expected["recordings"].items())
    assert [list(r) for r in conn.execute("SELECT id, recording_id FROM windows ORDER BY id")] == expected["windows"]
    labels = conn.execute("SELECT id, recording_id, offsets, channel, label, label_type FROM annotations ORDER BY id")
    assert [[i, r, np.frombuffer(o, np.float64).tolist(), c, lab, t] for i, r, o, c, lab, t in labels] == \
        expected["labels"]
    conn.close()
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 9}

    table = archive.window_table()
    north = [i for i, f in enumerate(table["file"]) if "/north/" in f]
    assert [(table["start_time"][i], table["end_time"][i]) for i in north] == [
        (f"2026-06-01T05:00:0{s}.000+02:00", f"2026-06-01T05:00:0{s + 2}.000+02:00") for s in range(3)]
    assert {(table["start_time"][i], table["site"][i]) for i, f in enumerate(table["file"]) if "/north/" not in f} \
        == {("", None)}
    assert agile.export_labels(archive, tmp_path / "labels.csv") == 4
    archive.close()
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert [(Path(r["file"]).name, r["start_s"], r["label"], r["start_time"], r["end_time"]) for r in exported] == [
        ("20260601_050000.WAV", "0", "Sweepus", "2026-06-01T05:00:00.000+02:00", "2026-06-01T05:00:02.000+02:00"),
        ("20260601_050000.WAV", "1", "Sweepus", "2026-06-01T05:00:01.000+02:00", "2026-06-01T05:00:03.000+02:00"),
        ("unknown.wav", "2", "Trillia", "", ""), ("20260603_050000.WAV", "1", "Sweepus", "", "")]
    assert agile.import_labels(agile.Archive.open(db), tmp_path / "labels.csv").stored == 4  # the export reads back
    assert labels_of(db) == {(Path(f).name, -1, *o, lab, "positive" if t else "negative")
                             for _, r, o, _, lab, t in expected["labels"]
                             for f, rid in expected["recordings"].items() if rid == r}


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_an_archive_of_a_newer_schema_is_refused(archive_path, tmp_path, capsys):
    db = copy_archive(archive_path, tmp_path / "db")
    conn = sqlite3.connect(db / "hoplite.sqlite")
    conn.execute("UPDATE hoplite_metadata SET value = json_set(value, '$.version', 99) WHERE key = 'avex_hub_schema'")
    conn.commit()
    conn.close()
    with pytest.raises(agile.SchemaError, match=r"schema version 99, written by a newer avex-hub; this one reads up "
                                                rf"to version {agile.schema.VERSION}: upgrade avex-hub"):
        agile.Archive.open(db, readonly=True)
    capsys.readouterr()
    assert main(["export-labels", "--db", str(db), "--out", str(tmp_path / "labels.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avex-hub: error: ") and "written by a newer avex-hub" in err[0]
    assert not (tmp_path / "labels.csv").exists()


def test_an_older_archive_that_cannot_be_written_is_refused_unchanged(tmp_path, monkeypatch):
    """An upgrade writes in place; an archive of version 1 in a folder we cannot write is refused with what to do,
    and nothing is written there (no backup, no lock). The suite may run as root, for whom permission bits do not
    bind, so the folder's refusal is what ``os.access`` answers for it."""
    db = tmp_path / "db"
    shutil.copytree(V1, db)
    before = sorted(p.name for p in db.iterdir())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if (Path(path) == db and mode & os.W_OK)
                        else real_access(path, mode, **kw))
    with pytest.raises(agile.ArchiveError, match=rf"schema version 1; this avex-hub upgrades it to "
                                                 rf"{agile.schema.VERSION} in place \(after "
                                                 r"a backup copy\), but the folder is read-only: open it once where "
                                                 r"it can be written, or copy it"):
        agile.Archive.open(db, readonly=True)
    # SQLite adds its -shm/-wal files beside a WAL database it reads where it can (in a folder it truly cannot
    # write, it reads without them); nothing else is there, and the archive is still version 1
    assert sorted(p.name for p in db.iterdir() if not p.name.endswith(("-shm", "-wal"))) == before
    conn = sqlite3.connect(f"file:{db / 'hoplite.sqlite'}?mode=ro", uri=True)
    assert conn.execute("SELECT COUNT(*) FROM hoplite_metadata WHERE key = 'avex_hub_schema'").fetchone() == (0,)
    conn.close()


def test_a_new_archive_is_made_by_the_same_steps_as_an_upgrade(archive_path, tmp_path):
    """The schema of a new archive equals that of an upgraded version-1 archive (one path for every change)."""
    shutil.copytree(V1, tmp_path / "old")
    with pytest.warns(agile.ArchiveNotice):
        agile.Archive.open(tmp_path / "old").close()

    def schema(db):
        conn = sqlite3.connect(db / "hoplite.sqlite")
        out = {t: [c[1:3] for c in conn.execute(f"PRAGMA table_info({t})")]
               for t in ("deployments", "recordings", "windows", "annotations")}
        conn.close()
        return out

    assert schema(tmp_path / "old") == schema(archive_path)


# -- damaged files ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cut, expected", [
    ("hoplite.sqlite", 0.0, "is empty"),
    ("hoplite.sqlite", 0.5, "it was cut short"),
    ("usearch.index", 0.5, "usearch.index cannot be read"),
])
def test_a_damaged_file_is_one_error_saying_what_to_do(archive_path, tmp_path, tiny_dir, name, cut, expected, capsys):
    db = copy_archive(archive_path, tmp_path / "db")
    data = (db / name).read_bytes()
    (db / name).write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(agile.ArchiveError, match=expected):
        agile.Archive.open(db, readonly=True)
    capsys.readouterr()
    code = main(["detect", "--db", str(db), "--probe", str(tiny_dir / "model.safetensors"), "--out",
                 str(tmp_path / "d.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("avex-hub: error: ") and expected in err[0]
    assert not (tmp_path / "d.csv").exists()


# -- one writer at a time -----------------------------------------------------------------------------------------------
HOLD = """
import sys
from avex_hub.integrations.agile.lock import WriterLock
lock = WriterLock(sys.argv[1], "avex-hub test-holder").__enter__()
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin or kills us
"""


def _holder(db):
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(archive_path, tmp_path,
                                                                                     capsys):
    db = copy_archive(archive_path, tmp_path / "db")
    child = _holder(db)
    try:
        archive = agile.Archive.open(db)
        with pytest.raises(agile.ArchiveLockedError, match=rf"is being written by process {child.pid} on \S+ "
                                                           r"\(avex-hub test-holder\), started \d+ s ago"):
            with archive.writing():
                pass
        hits = agile.search_vectors(agile.Archive.open(db, readonly=True), archive.vectors([1])[0], top=3)
        assert len(hits) == 3  # readers are not affected
        capsys.readouterr()
        assert main(["prune", "--db", str(db)]) == 4
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"process {child.pid}" in err[0]
    finally:
        child.kill()
        child.wait()
    with pytest.warns(agile.ArchiveNotice, match=rf"took over the lock left by process {child.pid} .*which is gone"):
        with archive.writing():
            pass
    with archive.writing():  # released: nothing to take over any more
        pass


def test_a_lock_of_another_machine_is_not_taken_over(archive_path, tmp_path):
    db = copy_archive(archive_path, tmp_path / "db")
    (db / "avex-hub.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "avex-hub index",
                                                 "started": 0}))
    with pytest.raises(agile.ArchiveLockedError, match="locked by process 1 on elsewhere .*another machine; if that "
                                                       "run has ended, delete"):
        with agile.Archive.open(db).writing():
            pass


def test_a_damaged_vector_index_moved_away_is_rebuilt_by_index_with_the_labels_kept(model, tmp_path):
    """What the error for a damaged usearch.index says to do works: the tables (and labels) are whole."""
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    _index(model, folder, db)
    archive = agile.Archive.open(db)
    agile.add_labels(archive, [(int(w), "Sweepus", "positive") for w in archive.window_table()["window_id"][:2]])
    given = labels_of(db)
    del archive
    (db / "usearch.index").write_bytes(b"\0" * 100)
    with pytest.raises(agile.ArchiveError, match=r"move it away \(mv usearch.index usearch.index.damaged\)"):
        agile.Archive.open(db, readonly=True)
    (db / "usearch.index").rename(db / "usearch.index.damaged")
    with pytest.warns(agile.ArchiveNotice, match="repaired: 2 recordings had windows without vectors"):
        report = _index(model, folder, db)
    assert len(report.added) == 2
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}
    assert labels_of(db) == given


def test_labels_of_an_older_channels_all_archive_still_apply_to_every_channel(tmp_path):
    """Version 1 stored no channel with a label, and in a ``--channels all`` archive it labelled every channel of
    its window. The upgrade keeps that meaning (channel NULL), says how many such labels there are, and export,
    import and training read them so. The fixture is a mix archive; its recorded settings are made ``all`` here."""
    db = tmp_path / "db"
    shutil.copytree(V1, db)
    conn = sqlite3.connect(db / "hoplite.sqlite")
    (value,) = conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub'").fetchone()
    record = json.loads(value)
    record["json"] = json.dumps({**json.loads(record["json"]), "channels": "all"})
    conn.execute("UPDATE hoplite_metadata SET value = ? WHERE key = 'avex_hub'", (json.dumps(record),))
    conn.commit()
    conn.close()
    with pytest.warns(agile.ArchiveNotice) as said:
        archive = agile.Archive.open(db)
    assert archive.settings["channels"] == "all"
    assert ("3 labels were stored before labels named a channel: each still applies to every channel of its window; "
            "label them again per channel where the channels differ") in [str(w.message) for w in said]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", agile.ArchiveNotice)  # the repair of the fixture's orphans, tested above
        with archive.writing():
            pass
    before = labels_of(db)
    assert {row[1] for row in before} == {None} and len(before) == 2
    assert agile.export_labels(archive, tmp_path / "labels.csv") == 2
    assert [r["channel"] for r in csv_rows(tmp_path / "labels.csv")] == ["", ""]
    agile.import_labels(archive, tmp_path / "labels.csv")
    assert labels_of(db) == before
    ids, targets, names = agile.labelled_windows(archive)
    assert names == ["Sweepus"] and targets[:, 0].tolist() == [1.0, 0.0]
