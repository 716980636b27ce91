"""Indexing (avex_hub.integrations.agile.index): resumable, new files only, interruptions at every step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import HOP, WINDOW, consistency, data, labels_of, read_rows, tiny_recordings  # noqa: E402,F401 - data: a fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_index_adds_new_files_only_and_survives_interruptions(model, data, tmp_path, monkeypatch):
    folder = tmp_path / "rec"
    folder.mkdir()
    for p in data.long_recordings:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "db"
    import avex_hub.integrations.agile.index as module

    real = module.iter_file_results

    def interrupted(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(module, "iter_file_results", interrupted)
    with pytest.raises(KeyboardInterrupt):
        agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    monkeypatch.setattr(module, "iter_file_results", real)
    assert len(agile.Archive.open(db, readonly=True)) == 19  # the first file was committed when it stopped
    report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert len(report.added) == 1 and len(report.skipped) == 1 and report.windows == 19
    shutil.copy(sorted((data.root / "clips").rglob("*.wav"))[0], folder / "new.wav")
    report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert [os.path.basename(p) for p in report.added] == ["new.wav"] and len(report.skipped) == 2
    archive = agile.Archive.open(db)
    assert len(archive) == 39
    # A run stopped between the SQLite commit and saving the vector index: the file's vectors are missing;
    # the next run notices and embeds that file again.
    new_ids = archive.window_table()["window_id"][-1:]
    archive.db.ui.load()
    archive.db.ui.remove(new_ids)
    archive.db.ui.save()
    with pytest.warns(agile.ArchiveNotice, match="repaired: 1 recordings had windows without vectors"):
        report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert [os.path.basename(p) for p in report.added] == ["new.wav"]
    assert len(agile.Archive.open(db, readonly=True)) == 39


def test_a_run_stopped_while_saving_the_index_keeps_the_previous_index(model, data, tmp_path, monkeypatch):
    from usearch.index import Index

    folder = tmp_path / "rec"
    folder.mkdir()
    first, second = data.long_recordings[:2]
    shutil.copy(first, folder / first.name)
    db = tmp_path / "db"
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    index_file = db / "usearch.index"
    before = index_file.read_bytes()
    shutil.copy(second, folder / second.name)
    real_save = Index.save

    def killed_while_writing(self, path_or_buffer=None, progress=None):
        target = path_or_buffer if path_or_buffer is not None else self.path
        with open(target, "wb") as handle:  # half an index on disk, then the process is stopped
            handle.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    monkeypatch.setattr(Index, "save", real_save)
    assert index_file.read_bytes() == before  # the write went to a temporary file, now removed
    assert [p.name for p in db.iterdir() if p.name.endswith(".tmp.index")] == []
    with pytest.warns(agile.ArchiveNotice, match="1 recordings have windows without vectors"):
        assert len(agile.Archive.open(db, readonly=True)) == 19  # the first file's vectors, whole
    with pytest.warns(agile.ArchiveNotice, match="repaired: 1 recordings had windows without vectors"):
        report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert [os.path.basename(p) for p in report.added] == [second.name]  # its rows had no vectors: embedded again
    assert len(agile.Archive.open(db, readonly=True)) == 38


def test_a_folder_reached_through_a_link_is_the_same_folder(model, tmp_path):
    """On main the same folder through a symbolic link was indexed twice (recordings keyed by absolute path)."""
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    (tmp_path / "link").symlink_to(folder)
    first = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    again = agile.index_files(model, [tmp_path / "link"], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert len(first.added) == 2 and again.added == [] and len(again.skipped) == 2
    archive = agile.Archive.open(db, readonly=True)
    assert len(archive) == 6 and sorted(archive.recordings()) == [str(folder.resolve() / n) for n in ("a.wav", "b.wav")]


def test_a_file_name_that_is_not_utf8_does_not_stop_indexing(model, tmp_path):
    """On main one such name stopped all indexing, for good (`embed` handled the same file)."""
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder)
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.wav")
    shutil.copy(folder / "a.wav", odd)
    report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert report.failures == {} and len(report.added) == 3
    archive = agile.Archive.open(db, readonly=True)
    name = str(folder.resolve() / "caf\\xe9.wav")  # as `avex-hub embed` writes it
    assert name in archive.recordings() and archive.missing_files() == []
    again = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert again.added == [] and len(again.skipped) == 3
    os.remove(odd)
    assert agile.Archive.open(db, readonly=True).missing_files() == [name]


def test_audio_that_is_gone_is_reported_and_pruned_with_its_labels_kept_aside(model, tmp_path, tiny_dir, capsys):
    folder, db = tmp_path / "rec", tmp_path / "db"
    tiny_recordings(folder, ("a.wav", "b.wav", "c.wav"))
    agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    archive = agile.Archive.open(db)
    table = archive.window_table()
    b = [int(w) for w, f in zip(table["window_id"], table["file"]) if f.endswith("b.wav")]
    agile.add_labels(archive, [(b[0], "Sweepus", "positive"), (int(table["window_id"][0]), "Sweepus", "negative")])
    os.remove(folder / "b.wav")
    query = f"{folder / 'a.wav'}:0-2"
    capsys.readouterr()
    assert main(["search", "--db", str(db), "--query", query, "--top", "9", "--out", str(tmp_path / "h.csv"),
                 "--checkpoint", str(tiny_dir), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (f"avex-hub: 1 files of the hits are no longer where they were indexed (e.g. {folder.resolve() / 'b.wav'}); "
            f"`avex-hub prune --db {db}` removes them") in err
    assert main(["prune", "--db", str(db), "--dry-run"]) == 0
    assert "would remove 1 recordings whose audio is gone (3 windows)" in capsys.readouterr().err
    assert len(agile.Archive.open(db, readonly=True)) == 9
    assert main(["prune", "--db", str(db)]) == 0
    err = capsys.readouterr().err
    kept = next(db.glob("pruned-labels-*.csv"))
    assert f"removed 1 recordings whose audio is gone (3 windows); their labels were written to {kept} first" in err
    assert [(Path(r["file"]).name, r["label"], r["label_type"]) for r in read_rows(kept)] == [
        ("b.wav", "Sweepus", "positive")]
    assert labels_of(db) == {("a.wav", -1, 0.0, 2.0, "Sweepus", "negative")}
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}
