"""The archive (avex_hub.integrations.agile.archive, .settings): settings recorded and checked, repairs of runs
stopped between the SQLite commit and the vector-index save.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from agile_support import HOP, WINDOW, archive_path, data  # noqa: E402,F401 - data, archive_path: fixtures

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
    assert len(agile.Archive.open(db, readonly=True)) == 38  # 19 of them now belong to no window
    report = agile.index_files(model, [folder], db, window_s=WINDOW, hop_s=HOP, progress=False)
    assert len(report.added) == 1  # the file is embedded again, under new window ids
    archive = agile.Archive.open(db, readonly=True)
    window_ids = archive.window_table()["window_id"]
    assert len(archive) == 38 and set(np.asarray(archive.db.ui.keys).tolist()) == set(window_ids.tolist())
    query = archive.vectors(window_ids[:1])
    hits = agile.search_vectors(archive, query, top=38, exact=True)  # every stored vector resolves to a window
    assert len(hits) == 38 and hits[0].window_id == window_ids[0]
