"""Indexing (avex_hub.integrations.agile.index): resumable, new files only, interruptions at every step.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from agile_support import HOP, WINDOW, data  # noqa: E402,F401 - data, archive_path: fixtures

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
    assert len(agile.Archive.open(db, readonly=True)) == 19  # the first file's vectors, whole
    report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert [os.path.basename(p) for p in report.added] == [second.name]  # its rows had no vectors: embedded again
    assert len(agile.Archive.open(db, readonly=True)) == 38
