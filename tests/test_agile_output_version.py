"""The output version of an archive's vectors (avex_hub.integrations.agile.versions): an archive written by output
version 2 (tests/fixtures/agile-padded, made by tests/fixtures/make_agile_padded_archive.py with that version's code)
padded each recording of at most one window to the window; ``index`` into it embeds those again at their own length
under the same window ids, keeps every label, records version 3, and says so; a recording whose audio is gone keeps
its padded vector, is named in one line by index and by search until its audio is back. An older archive without
short recordings only gets the new version recorded; a newer one is refused.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from agile_support import consistency  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
PADDED = FIXTURES / "agile-padded"
EXPECTED = json.loads((PADDED / "expected.json").read_text())
ARGS = dict(window_s=2.0, hop_s=1.0, progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _maker():
    spec = importlib.util.spec_from_file_location("make_agile_padded_archive",
                                                  FIXTURES / "make_agile_padded_archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _put_back(db: Path, rec: Path, names) -> list[Path]:
    """Write the fixture's recordings ``names`` under ``rec`` and point the archive at ``rec`` (the fixture's folder
    is gone): the files are where and as they were indexed (the same bytes; their new times recorded)."""
    paths = _maker().write_audio(rec, names)
    conn = sqlite3.connect(db / "hoplite.sqlite")
    conn.execute("UPDATE recordings SET filename = ? || substr(filename, ?) WHERE substr(filename, 1, ?) = ?",
                 (str(rec.resolve()), len(EXPECTED["folder"]) + 1, len(EXPECTED["folder"]), EXPECTED["folder"]))
    for path in paths:
        stat = path.stat()
        conn.execute("UPDATE recordings SET size = ?, mtime_ns = ? WHERE filename = ?",
                     (stat.st_size, stat.st_mtime_ns, str(path.resolve())))
    conn.commit()
    conn.close()
    return paths


def _stored(db: Path) -> dict[int, np.ndarray]:
    """Every vector of the archive by window id, read with usearch itself (not the code under test)."""
    from usearch.index import Index

    index = Index.restore(str(db / "usearch.index"), view=True)
    keys = np.sort(np.asarray(index.keys, np.int64))
    return dict(zip(keys.tolist(), np.asarray(index.get(keys), np.float32)))


def _rows(db: Path) -> tuple[list, list, dict]:
    """Windows ``[id, recording, offsets]``, labels (as expected.json has them) and the recorded settings."""
    conn = sqlite3.connect(db / "hoplite.sqlite")
    windows = [[i, r, np.frombuffer(o, np.float64).tolist()] for i, r, o in
               conn.execute("SELECT id, recording_id, offsets FROM windows ORDER BY id")]
    labels = [[i, r, np.frombuffer(o, np.float64).tolist(), c, lab, t] for i, r, o, c, lab, t in
              conn.execute("SELECT id, recording_id, offsets, channel, label, label_type FROM annotations ORDER BY id")]
    settings = json.loads(json.loads(conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub'")
                                     .fetchone()[0])["json"])
    conn.close()
    return windows, labels, settings


def _lines(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, agile.ArchiveNotice)]


def _fix(db: Path) -> str:
    return (f"`avex-hub index` into it embeds again those whose audio is where it was indexed (put it back "
            f"first); `avex-hub prune --db {db}` removes those whose audio is gone (their labels exported first)")


def _padded_line(db: Path, count: int) -> str:
    """What search says of an archive with ``count`` padded recordings of one window each."""
    return (f"{db}: {count} windows of {count} recordings no longer than one window hold vectors of output version 2 "
            "(padded to the window; this version runs them at their own length), so their scores are not comparable "
            f"with the rest: {_fix(db)}")


def _window_of(name: str) -> int:
    return next(i for i, r, _ in EXPECTED["windows"] if r == EXPECTED["recordings"][name])


@pytest.fixture(scope="module")
def fresh(model, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each fixture recording's vectors as today's code indexes it into a new archive: ``{name: [windows, dim]}``."""
    root = tmp_path_factory.mktemp("fresh")
    _maker().write_audio(root / "rec")
    agile.index_files(model, [root / "rec"], root / "db", **ARGS)
    archive = agile.Archive.open(root / "db", readonly=True)
    table = archive.window_table()
    out = {Path(f).name: archive.vectors(table["window_id"][table["file"] == f]) for f in dict.fromkeys(table["file"])}
    archive.close()
    return out


def test_index_embeds_the_padded_recordings_again_under_their_ids(model, fresh, tmp_path):
    db, rec = tmp_path / "db", tmp_path / "rec"
    shutil.copytree(PADDED, db)
    names = ("long.wav", "exact.wav", "short.wav")
    paths = dict(zip(names, _put_back(db, rec, names)))
    before = _stored(db)
    short, gone = _window_of("short.wav"), _window_of("gone.wav")
    # Before: the short recording's vector is that of its 1.5 s padded to the 2 s window with a mask (version 2's),
    # far from the one of its own length.
    audio = torch.from_numpy(sf.read(paths["short.wav"], dtype="float32")[0])
    padded = torch.zeros(1, 32000)
    padded[0, :len(audio)] = audio
    with torch.inference_mode():
        as_padded = model.embed(padded, torch.arange(32000)[None] >= len(audio))[0].numpy()
        own = model.embed(audio[None])[0].numpy()
    np.testing.assert_allclose(before[short], as_padded, atol=2e-3)  # stored as float16
    assert np.abs(before[short] - own).max() > 0.05
    assert np.abs(fresh["short.wav"][0] - own).max() < 2e-3

    with pytest.warns(agile.ArchiveNotice) as said:
        report = agile.index_files(model, [rec], db, **ARGS)
    assert sorted(map(Path, report.skipped)) == sorted(p.resolve() for p in paths.values()) and not report.added
    lines = _lines(said)
    assert f"{db}: 1 recordings no longer than one window embedded again at their own length (output version 2 " \
           "padded them to the window); their window ids and labels are unchanged" in lines
    assert f"{db}: 1 recordings no longer than one window keep vectors padded by output version 2 (their audio is " \
           f"gone or changed since it was indexed), not comparable with the rest: {_fix(db)}" in lines

    after = _stored(db)
    windows, labels, settings = _rows(db)
    assert windows == EXPECTED["windows"] and labels == EXPECTED["labels"]  # every id and label as it was
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}  # foreign_key_check
    assert settings["output_version"] == 3
    np.testing.assert_allclose(after[short], fresh["short.wav"][0], atol=1e-5)  # == a fresh index at its own length
    np.testing.assert_array_equal(after[gone], before[gone])  # its audio is gone: kept as it was
    for name in ("long.wav", "exact.wav"):  # values that version 3 did not change: untouched, equal to a fresh index
        ids = [i for i, r, _ in EXPECTED["windows"] if r == EXPECTED["recordings"][name]]
        np.testing.assert_array_equal(np.stack([after[i] for i in ids]), np.stack([before[i] for i in ids]))
        np.testing.assert_allclose(np.stack([after[i] for i in ids]), fresh[name], atol=1e-5)

    # search names the padded recording in one line, until its audio is back and index has embedded it again
    archive = agile.Archive.open(db, readonly=True)
    query = [agile.Query(str(paths["short.wav"]), 0.0, 1.5)]
    with pytest.warns(agile.ArchiveNotice) as said:
        hits = agile.search(archive, model, query, top=2)
    assert hits[0].window_id == short and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert [line for line in _lines(said) if "output version" in line] == [_padded_line(db, 1)]
    with pytest.warns(agile.ArchiveNotice) as said:  # and so do train-classifier and detect, which read vectors too
        agile.detect(archive, agile.train_classifier(archive, tmp_path / "probe.safetensors", epochs=5))
    archive.close()
    assert [line for line in _lines(said) if "output version" in line] == [_padded_line(db, 1)] * 2


def test_a_padded_recording_whose_audio_comes_back_is_embedded_again(model, fresh, tmp_path):
    db, rec = tmp_path / "db", tmp_path / "rec"
    shutil.copytree(PADDED, db)
    _put_back(db, rec, ("long.wav",))
    with pytest.warns(agile.ArchiveNotice) as said:  # the audio of both short recordings is gone
        agile.index_files(model, [rec], db, **ARGS)
    assert any("2 recordings no longer than one window keep vectors padded by output version 2" in line
               for line in _lines(said))
    conn = sqlite3.connect(db / "hoplite.sqlite")
    padded = json.loads(conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub_padded'").fetchone()[0])
    conn.close()
    assert padded == {"output_version": 2, "windows": sorted([_window_of("short.wav"), _window_of("gone.wav")])}
    assert _rows(db)[2]["output_version"] == 3

    _put_back(db, rec, ("short.wav", "gone.wav"))  # back where they were indexed
    with pytest.warns(agile.ArchiveNotice) as said:
        agile.index_files(model, [rec / "long.wav"], db, **ARGS)
    assert f"{db}: 2 recordings no longer than one window embedded again at their own length (output version 2 " \
           "padded them to the window); their window ids and labels are unchanged" in _lines(said)
    after = _stored(db)
    for name in ("short.wav", "gone.wav"):
        np.testing.assert_allclose(after[_window_of(name)], fresh[name][0], atol=1e-5)
    windows, labels, _ = _rows(db)
    assert windows == EXPECTED["windows"] and labels == EXPECTED["labels"]
    assert consistency(db)["violations"] == []
    archive = agile.Archive.open(db, readonly=True)
    assert agile.versions.padded_windows(archive) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", agile.ArchiveNotice)  # nothing to say any more
        agile.search(archive, model, [agile.Query(str(rec / "short.wav"), 0.0, 1.5)], top=1)
    archive.close()



def test_the_upgrade_knows_the_current_output_version():
    """index adds to an archive of an older output version after versions.upgrade_vectors; it knows what changed up to
    version 3 only. A new OUTPUT_VERSION must teach it what the new one changed (or refuse older archives) first."""
    from avex_hub.embed.settings import OUTPUT_VERSION

    assert agile.versions.UPGRADES_TO == OUTPUT_VERSION


def _record_version(db: Path, version: int | None) -> None:
    """Write output version ``version`` (None: none, as archives before output versions) into the archive's settings."""
    conn = sqlite3.connect(db / "hoplite.sqlite")
    stored = json.loads(json.loads(conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub'")
                                   .fetchone()[0])["json"])
    stored.pop("output_version")
    if version is not None:
        stored["output_version"] = version
    conn.execute("UPDATE hoplite_metadata SET value = ? WHERE key = 'avex_hub'",
                 (json.dumps({"json": json.dumps(stored)}),))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [2, None])
def test_an_older_archive_without_short_recordings_is_added_to_and_gets_the_version(model, tmp_path, version):
    """tests/fixtures/agile-v2 holds three 4 s recordings (2 s windows): nothing version 3 changed."""
    from recorder_files import plain_wav

    db = tmp_path / "db"
    shutil.copytree(FIXTURES / "agile-v2", db)
    _record_version(db, version)
    before = _stored(db)
    new = plain_wav(tmp_path / "rec" / "new.wav", seconds=4.0, freq=800.0)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        report = agile.index_files(model, [new], db, **ARGS)
    assert report.added == [str(new)] and report.windows == 3
    assert not [line for line in _lines(said) if "output version" in line]
    after = _stored(db)
    assert sorted(after) == sorted(before) + [10, 11, 12]
    for window, vector in before.items():
        np.testing.assert_array_equal(after[window], vector)
    assert _rows(db)[2]["output_version"] == 3
    conn = sqlite3.connect(db / "hoplite.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM hoplite_metadata WHERE key = 'avex_hub_padded'").fetchone() == (0,)
    conn.close()
    archive = agile.Archive.open(db, readonly=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", agile.ArchiveNotice)
        agile.search(archive, model, [agile.Query(str(new), 0.0, 2.0)], top=1)
    archive.close()


def test_an_archive_of_a_newer_output_version_is_refused(model, tmp_path):
    from recorder_files import plain_wav

    db = tmp_path / "db"
    shutil.copytree(FIXTURES / "agile-v2", db)
    _record_version(db, 4)
    new = plain_wav(tmp_path / "rec" / "new.wav", seconds=4.0)
    with pytest.warns(agile.ArchiveNotice):  # the schema upgrade (2 to 3) says what it did
        with pytest.raises(agile.SettingsMismatchError, match=r"output_version: database 4, given 3"):
            agile.index_files(model, [new], db, **ARGS)
    assert len(_stored(db)) == 9  # nothing added


def test_an_upgrade_stopped_half_way_leaves_the_old_archive_or_one_that_says_so(model, fresh, tmp_path, monkeypatch,
                                                                                capsys, tiny_dir):
    """Stopped before the vector index is saved: the old archive, whole. Stopped after it, before the SQLite commit:
    new vectors under an archive that still records version 2, so search still says so, and the next index finishes
    it. Never new rows over old vectors (the version recorded while the padded vectors are still there)."""
    from usearch.index import Index

    from avex_hub.cli import main
    from avex_hub.integrations.agile import archive as archive_module

    db, rec = tmp_path / "db", tmp_path / "rec"
    shutil.copytree(PADDED, db)
    _put_back(db, rec, ("long.wav", "exact.wav", "short.wav", "gone.wav"))
    with pytest.warns(agile.ArchiveNotice) as said:
        agile.Archive.open(db).close()  # the schema upgrade, so that the files below are those of this upgrade
    assert "from schema version 2 to 3" in _lines(said)[0]
    before, rows = _stored(db), _rows(db)
    short = _window_of("short.wav")

    def stop(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # stopped while the new index file is written
        patch.setattr(Index, "save", stop)
        with pytest.raises(KeyboardInterrupt):
            agile.index_files(model, [rec], db, **ARGS)
    assert _stored(db).keys() == before.keys() and all(np.array_equal(_stored(db)[k], v) for k, v in before.items())
    assert _rows(db) == rows

    with monkeypatch.context() as patch:  # stopped after the index file is in place, before the SQLite commit
        patch.setattr(archive_module, "_index_saved", stop)
        with pytest.raises(KeyboardInterrupt):
            agile.index_files(model, [rec], db, **ARGS)
    np.testing.assert_allclose(_stored(db)[short], fresh["short.wav"][0], atol=1e-5)
    assert _rows(db) == rows and rows[2]["output_version"] == 2
    capsys.readouterr()
    search = ["search", "--db", str(db), "--query", f"{rec / 'short.wav'}:0-1.5", "--top", "2", "--out",
              str(tmp_path / "hits.csv"), "--no-progress", "--checkpoint", str(tiny_dir)]
    assert main(search) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "output version" in line]
    assert said == [f"avex-hub: {_padded_line(db, 2)}"]

    with pytest.warns(agile.ArchiveNotice, match="2 recordings no longer than one window embedded again"):
        agile.index_files(model, [rec], db, **ARGS)  # finishes it
    after = _stored(db)
    for name in ("short.wav", "gone.wav"):
        np.testing.assert_allclose(after[_window_of(name)], fresh[name][0], atol=1e-5)
    windows, labels, settings = _rows(db)
    assert (windows, labels, settings["output_version"]) == (rows[0], rows[1], 3)
    assert consistency(db) == {"violations": [], "unembedded": [], "stale": [], "windows": 6}
    assert main(search) == 0
    assert "output version" not in capsys.readouterr().err
