"""avex_hub.explore: an archive's windows read back from what the CLI writes, mapped, clustered, listened to.

The outputs are made by the real commands on synthetic recordings (``avex-hub embed`` in process; ``agile.index_files``
for an archive) and checked against brute-force readings of the same files.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from avex_hub import explore

pytest.importorskip("sklearn")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    from avex_hub.audio.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("explore") / "data", num_species=3, individuals_per_species=1,
                                  clips_per_individual=2, clip_s=1.0, num_long_recordings=2, long_recording_s=12,
                                  seed=0)


@pytest.fixture(scope="module")
def parquet(recordings, tiny_dir, one_torch_thread):
    from avex_hub.cli import main

    out = recordings.root / "windows.parquet"
    code = main(["embed", str(recordings.root / "long"), "--out", str(out), "--checkpoint", str(tiny_dir),
                 "--window", "2", "--hop", "1", "--device", "cpu", "--no-progress"])
    assert code == 0
    return out


def test_read_windows_gives_back_the_rows_of_an_embed_output(parquet, recordings, tiny_dir):
    windows = explore.read_windows(parquet)
    table = pq.read_table(parquet)  # brute force: the columns as written
    assert len(windows) == table.num_rows == 2 * 11  # 12 s in 2 s windows every 1 s, per recording
    assert list(windows.file) == table["file"].to_pylist()
    np.testing.assert_array_equal(windows.start_s, table["start_s"].to_numpy())
    np.testing.assert_array_equal(windows.embeddings, np.array(table["embedding"].to_pylist(), np.float32))
    assert windows.embeddings.shape[1] == 64 and windows.settings["window_s"] == 2.0
    assert windows.describe(0) == "long_000.wav 0.0-2.0 s"

    from avex_hub.cli import main

    npz = parquet.with_suffix(".npz")
    assert main(["embed", str(recordings.root / "long"), "--out", str(npz), "--checkpoint", str(tiny_dir),
                 "--window", "2", "--hop", "1", "--device", "cpu", "--no-progress"]) == 0
    same = explore.read_windows(npz)
    assert list(same.file) == list(windows.file)
    np.testing.assert_allclose(same.embeddings, windows.embeddings, atol=1e-5)

    layers = parquet.with_name("layers.parquet")
    assert main(["embed", str(recordings.long_recordings[0]), "--out", str(layers), "--checkpoint", str(tiny_dir),
                 "--window", "2", "--layers", "1,-1", "--device", "cpu", "--no-progress"]) == 0
    with pytest.raises(ValueError, match=r"layers \[1, 3\]: pick one with layer="):
        explore.read_windows(layers)
    assert len(explore.read_windows(layers, layer=1)) == 6
    with pytest.raises(ValueError, match=r"no layer 2; it holds layers \[1, 3\]"):
        explore.read_windows(layers, layer=2)
    with pytest.raises(FileNotFoundError, match="holds no agile archive"):
        explore.read_windows(recordings.root)
    with pytest.raises(FileNotFoundError, match="no embeddings at"):
        explore.read_windows(recordings.root / "missing.parquet")


def test_labels_from_annotations_follow_the_overlap_rule(parquet, recordings):
    windows = explore.read_windows(parquet)
    labels = explore.labels_from_annotations(windows, recordings.annotations, background="background")
    with open(recordings.annotations, newline="", encoding="utf-8") as f:
        calls = list(csv.DictReader(f))
    expected = []  # brute force: every window against every call of its recording
    for file, start, end in zip(windows.file, windows.start_s, windows.end_s):
        best, label = 0.0, "background"
        for call in calls:
            if Path(recordings.root / call["path"]).resolve() != Path(file).resolve():
                continue
            s, e = float(call["start_s"]), float(call["end_s"])
            overlap = min(end, e) - max(start, s)
            if overlap > 0 and overlap >= 0.5 * min(end - start, e - s) and overlap > best:
                best, label = overlap, call["label"]
        expected.append(label)
    assert list(labels) == expected
    assert "background" in expected and len(set(expected)) >= 3


def test_labels_from_folders_name_each_files_class_folder():
    windows = explore.Windows(np.array(["/a/owl/1.wav", "b/frog/2.wav"], object), np.array([-1, -1]),
                              np.zeros(2), np.ones(2), np.eye(2, dtype=np.float32))
    assert list(explore.labels_from_folders(windows)) == ["owl", "frog"]
    with pytest.raises(ValueError, match="2 files but 3 end_s"):
        explore.Windows(windows.file, windows.channel, windows.start_s, np.ones(3), windows.embeddings)


def test_pca_map_matches_a_brute_force_pca_of_the_normalised_embeddings(monkeypatch):
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).standard_normal((40, 8)) * np.arange(1, 9)
    view = explore.map_2d(x, "pca")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    reference = PCA(2).fit(unit)
    np.testing.assert_allclose(np.abs(view.points), np.abs(reference.transform(unit)), atol=1e-9)
    assert view.axes[0] == f"PC1 ({reference.explained_variance_ratio_[0]:.0%} of the variance)"
    np.testing.assert_array_equal(explore.map_2d(x, "pca").points, view.points)  # the same every run
    monkeypatch.setitem(sys.modules, "umap", None)  # umap-learn not installed: import umap raises ImportError
    assert explore.map_2d(x).method == "pca"  # "auto" without umap-learn
    with pytest.raises(ImportError, match="needs umap-learn"):
        explore.map_2d(x, "umap")
    with pytest.raises(ValueError, match="method must be one of"):
        explore.map_2d(x, "tsne")


def test_clusters_scored_by_nmi_with_its_chance_level_and_central_windows():
    from conftest import blobs

    x, y = blobs(60, 3, 16, seed=1, spread=6.0)
    x = x.numpy()
    clusters = explore.cluster(x, k=3)
    labels = np.array(["a", "b", "c"], object)[y.numpy()]
    score = explore.score_clusters(clusters, labels)
    assert score.nmi == pytest.approx(1.0) and score.windows == 60 and score.chance < 0.2
    partly = labels.copy()
    partly[:30] = ""  # unlabelled windows do not count
    assert explore.score_clusters(clusters, partly).windows == 30
    central = explore.central_windows(x, clusters, per_cluster=4)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c, rows in central.items():  # brute force: cosine to each cluster's mean direction
        members = np.flatnonzero(clusters == c)
        centre = unit[members].mean(axis=0)
        cosine = unit[members] @ centre / np.linalg.norm(centre)
        assert list(rows) == list(members[np.argsort(-cosine)[:4]])
    noisy = explore.cluster(x, method="hdbscan", min_cluster_size=5)
    assert set(np.unique(noisy)) - {-1} and -1 not in explore.central_windows(x, noisy)
    with pytest.raises(ValueError, match="k-means needs k"):
        explore.cluster(x)
    with pytest.raises(ValueError, match="at least 2 labelled windows"):
        explore.score_clusters(clusters, np.full(60, "", object))


def test_window_audio_is_the_span_of_the_file_the_model_heard(parquet, recordings):
    from avex_hub.audio.decoding import load_audio

    windows = explore.read_windows(parquet)
    whole = load_audio(recordings.long_recordings[0]).waveform[0].numpy()
    row = int(np.flatnonzero((windows.file == str(recordings.long_recordings[0])) & (windows.start_s == 3.0))[0])
    np.testing.assert_allclose(explore.window_audio(windows, row), whole[3 * 16000:5 * 16000], atol=1e-3)
    past = explore.Windows(windows.file[:1], windows.channel[:1], np.array([11.0]), np.array([13.0]),
                           windows.embeddings[:1])
    audio = explore.window_audio(past, 0)  # the last second lies past the end: zero padded
    assert audio.shape == (32000,) and not audio[16000:].any()


def test_spectrogram_shows_a_tone_at_its_frequency_in_khz_up_to_nyquist():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    fig, ax = plt.subplots()
    try:
        explore.draw_spectrogram(ax, tone)
        image = ax.get_images()[0]
        left, right, bottom, top = image.get_extent()
        assert top == pytest.approx(8000) and right == pytest.approx(1.0, abs=0.05)  # Nyquist of 16 kHz; 1 s
        rows = np.asarray(image.get_array())  # dB, one row per frequency bin, the highest frequency first
        peak_hz = top - (np.argmax(rows.mean(axis=1)) + 0.5) * (top - bottom) / rows.shape[0]
        assert abs(peak_hz - 3000) <= 8000 / 256  # within one bin of the tone
        # Each bin drawn as a block, not smoothed: what the analysis holds, and a PNG a third the size on the site.
        assert image.get_interpolation() == "nearest"
        fig.canvas.draw()
        assert ax.get_ylabel() == "frequency (kHz)" and "8" in [t.get_text() for t in ax.get_yticklabels()]
    finally:
        plt.close(fig)


def test_the_map_names_the_window_under_the_pointer_and_plays_the_clicked_one(parquet):
    windows = explore.read_windows(parquet)
    view = explore.map_2d(windows.embeddings, "pca")
    played = []
    explorer = explore.MapExplorer(windows, view.points, explore.labels_from_folders(windows), play=played.append)
    explorer.fig.canvas.draw()
    x, y = explorer.ax.transData.transform(view.points[5])
    explorer.on_move(SimpleNamespace(inaxes=explorer.ax, x=x + 1, y=y - 1))
    assert explorer.note.get_visible() and explorer.note.get_text() == windows.describe(5)
    assert explorer.nearest(x, y) == 5
    explorer.on_click(SimpleNamespace(inaxes=explorer.ax, x=x, y=y))
    explorer.on_click(SimpleNamespace(inaxes=None, x=x, y=y))  # outside the axes: nothing
    assert played == [5]
    far = explorer.ax.transData.transform(view.points).max(axis=0) + 100
    explorer.on_move(SimpleNamespace(inaxes=explorer.ax, x=far[0], y=far[1]))
    assert not explorer.note.get_visible()
    with pytest.raises(ValueError, match=r"points: expected \[22, 2\]"):
        explore.MapExplorer(windows, view.points[:3])


def test_read_windows_opens_an_agile_archive_with_its_labels(recordings, tiny_dir, parquet, one_torch_thread):
    pytest.importorskip("perch_hoplite")
    import avex_hub
    from avex_hub.integrations import agile

    from perch_hoplite.db import sqlite_usearch_impl

    assert explore._ARCHIVE_FILE == sqlite_usearch_impl.HOPLITE_FILENAME  # how read_windows tells an archive folder
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    db = recordings.root / "archive"
    agile.index_files(model, [recordings.root / "long"], db, window_s=2.0, hop_s=1.0, progress=False)
    windows = explore.read_windows(db)
    from_parquet = explore.read_windows(parquet)
    assert len(windows) == len(from_parquet) and "label" not in windows.columns
    order = np.lexsort((windows.start_s, windows.file.astype(str)))
    reference = np.lexsort((from_parquet.start_s, from_parquet.file.astype(str)))
    np.testing.assert_allclose(windows.embeddings[order], from_parquet.embeddings[reference], atol=2e-3)  # float16
    archive = agile.Archive.open(db)
    first = archive.window_table()
    agile.add_labels(archive, [(int(first["window_id"][0]), "owl", "positive")])
    archive.commit()
    labelled = explore.read_windows(db)
    assert list(labelled.columns["label"]).count("owl") == 1


# ipympl 0.10 builds its own toolbar with an argument traitlets 5 deprecates: inside ipympl, no effect on the map.
@pytest.mark.filterwarnings(r"ignore:Passing unrecognized arguments to super\(Toolbar\):DeprecationWarning")
def test_the_map_is_a_jupyter_widget_with_a_player(parquet):
    import importlib.util

    import matplotlib

    if importlib.util.find_spec("ipympl") is None:  # not importorskip: importing ipympl switches pyplot's backend
        pytest.skip("needs ipympl (the dev and notebooks extras have it)")
    ipywidgets = pytest.importorskip("ipywidgets")

    windows = explore.read_windows(parquet)
    explorer = explore.MapExplorer(windows, explore.map_2d(windows.embeddings, "pca").points)
    backend = matplotlib.get_backend()
    widget = explorer.widget()
    assert matplotlib.get_backend() == backend  # ipympl's import does not take over the other figures
    assert isinstance(widget, ipywidgets.VBox) and widget.children[1] is explorer.output
    assert type(widget.children[0]).__module__.startswith("ipympl") and explorer.fig.canvas is widget.children[0]
    x, y = explorer.ax.transData.transform(explorer.points[2])
    explorer.on_move(SimpleNamespace(inaxes=explorer.ax, x=x, y=y))  # hovering redraws on the widget's canvas
    assert explorer.note.get_text() == windows.describe(2)


def test_times_and_sites_of_windows_match_their_file_names_and_deployments(tmp_path):
    import datetime as dt
    from zoneinfo import ZoneInfo

    import soundfile as sf

    files = {"north": tmp_path / "north" / "20260601_235930.wav",  # local time, crosses midnight
             "south": tmp_path / "south" / "20260601_120000.wav",
             "none": tmp_path / "elsewhere" / "recording.wav"}  # no time in its name, in no deployment
    for path in files.values():
        path.parent.mkdir()
        sf.write(path, np.zeros(8000, np.float32), 16000)
    table = tmp_path / "deployments.csv"
    table.write_text("folder,site,timezone\nnorth/,N1,Europe/Berlin\nsouth/,S1,UTC\n", encoding="utf-8")
    rows = [("north", 0.0), ("north", 20.0), ("north", 40.0), ("south", 5.0), ("none", 1.0)]
    windows = explore.Windows(np.array([str(files[k]) for k, _ in rows], dtype=object), np.full(len(rows), -1),
                              np.array([s for _, s in rows]), np.array([s + 1.0 for _, s in rows]),
                              np.zeros((len(rows), 4), np.float32))

    recordings = explore.add_times_and_sites(windows, deployments=table, timezone="+02:00")

    # brute force: each file's local start, plus the window's offset, in its site's zone
    clock = dt.timezone(dt.timedelta(hours=2))
    local_start = {"north": dt.datetime(2026, 6, 1, 23, 59, 30, tzinfo=ZoneInfo("Europe/Berlin")),
                   "south": dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=clock)}
    site_zone = {"north": ZoneInfo("Europe/Berlin"), "south": dt.timezone.utc}
    expected_site = {"north": "N1", "south": "S1", "none": ""}
    for i, (key, start_s) in enumerate(rows):
        assert windows.columns["site"][i] == expected_site[key]
        if key == "none":
            assert (windows.columns["start_time"][i], windows.columns["hour"][i]) == ("", -1)
            continue
        moment = local_start[key] + dt.timedelta(seconds=start_s)
        assert dt.datetime.fromisoformat(windows.columns["start_time"][i]) == moment
        assert windows.columns["start_time"][i].endswith("+02:00")  # the recorder's offset
        assert windows.columns["hour"][i] == moment.astimezone(site_zone[key]).hour
    assert windows.columns["hour"].tolist() == [23, 23, 0, 10, -1]
    assert windows.columns["start_time"][2] == "2026-06-02T00:00:10.000+02:00"
    assert [(Path(r.file).name, r.flag) for r in recordings] == [
        ("20260601_235930.wav", ""), ("20260601_120000.wav", ""), ("recording.wav", "no deployment")]
