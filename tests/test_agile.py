"""Agile modelling on perch-hoplite (avex_hub.integrations.agile, avex-hub index|search|label|train-classifier|detect).

The tiny BEATs fixture embeds the synthetic dataset; hoplite's own database, embedding pipeline and search run
unchanged on what we build and are compared with brute force and with our retrieval metrics.
"""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from avex_hub.audio.synthetic import make_synthetic_dataset  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WINDOW, HOP = 2.0, 1.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "syn", num_species=3, individuals_per_species=2,
                                  clips_per_individual=4, num_long_recordings=2, long_recording_s=20.0, seed=3)


@pytest.fixture(scope="module")
def archive_path(model, data, tmp_path_factory):
    """The long recordings, 2 s windows, 1 s hop."""
    path = tmp_path_factory.mktemp("db") / "archive"
    agile.index_files(model, [data.root / "long"], path, window_s=WINDOW, hop_s=HOP,
                      progress=False)
    return path


def truth_labels(data, table) -> list[str]:
    """The species whose call overlaps each window most ('' for none), from the synthetic annotations."""
    events = list(csv.DictReader(open(data.annotations, encoding="utf-8")))
    out = []
    for f, s, e in zip(table["file"], table["start_s"], table["end_s"]):
        overlap = {}
        for r in events:
            if f.endswith(r["path"]):
                o = min(e, float(r["end_s"])) - max(s, float(r["start_s"]))
                if o > 0:
                    overlap[r["label"]] = overlap.get(r["label"], 0) + o
        out.append(max(overlap, key=overlap.get) if overlap else "")
    return out


# -- the adapter and hoplite's own pipeline ---------------------------------------------------------------------
def test_adapter_is_the_model_with_our_windowing(model):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    adapter = agile.AvexEmbeddingModel.from_model(model, window_size_s=WINDOW, hop_size_s=HOP, layer=2)
    out = adapter.embed(audio).embeddings
    assert out.shape == (4, 1, model.embedding_dim)  # windows at 0, 1, 2, 3 s (the last ends with the audio)
    with torch.no_grad():
        direct = model.embed(torch.from_numpy(audio[16000:48000])[None], layer=2)
    np.testing.assert_allclose(out[1, 0], direct[0].numpy(), atol=1e-5)
    stereo = adapter.embed(np.stack([audio, audio[::-1].copy()])).embeddings
    assert stereo.shape == (4, 2, model.embedding_dim)
    np.testing.assert_allclose(stereo[:, 0], out[:, 0], atol=1e-5)
    batched = adapter.batch_embed(np.stack([audio, audio]))
    assert batched.batched and batched.embeddings.shape == (2, 4, 1, model.embedding_dim)


def test_hoplite_embed_worker_runs_our_adapter_unchanged(model, data, archive_path, tmp_path):
    from ml_collections import config_dict
    from perch_hoplite.agile import embed, source_info
    from perch_hoplite.db import sqlite_usearch_impl

    adapter = agile.AvexEmbeddingModel.from_model(model, window_size_s=WINDOW, hop_size_s=HOP)
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(
        str(tmp_path / "hop"), usearch_cfg=sqlite_usearch_impl.get_default_usearch_config(model.embedding_dim))
    sources = source_info.AudioSources((source_info.AudioSourceConfig(
        dataset_name="syn", base_path=str(data.root), file_glob="long/*.wav", shard_len_s=None),))
    config = embed.ModelConfig(model_key="avex_hub", embedding_dim=model.embedding_dim,
                               model_config=config_dict.ConfigDict())
    embed.EmbedWorker(sources, config, db, embedding_model=adapter, audio_worker_threads=1).process_all()
    ours = agile.Archive.open(archive_path, readonly=True)
    table = ours.window_table()
    compared = 0
    for w in db.get_all_windows(include_embedding=True):
        name = db.get_recording(w.recording_id).filename
        rows = np.flatnonzero([f.endswith(name) and abs(s - w.offsets[0]) < 1e-6
                               for f, s in zip(table["file"], table["start_s"])])
        assert len(rows) == 1, (name, w.offsets)
        stored = ours.vectors(table["window_id"][rows])[0]
        np.testing.assert_allclose(w.embedding, stored, rtol=2e-3, atol=2e-3)  # hoplite stores float16
        compared += 1
    assert compared == len(ours) == 2 * 19  # 19 windows of 2 s at 1 s hop per 20 s recording


def test_hoplite_search_returns_the_brute_force_neighbours(archive_path, tmp_path):
    from perch_hoplite.db import brutalism, score_functions

    cos = score_functions.get_score_fn("cos")

    def check(archive, queries, exact_ids: bool):
        ids = archive.window_table()["window_id"]
        vectors = archive.vectors(ids)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for q in queries:
            true = unit @ unit[q]
            order = np.argsort(-true, kind="stable")[:10]
            results = {"exact": archive.db.search(vectors[q], 10, approximate=False, score_fn_name="cos"),
                       "approximate": archive.db.search(vectors[q], 10, approximate=True, score_fn_name="cos"),
                       "brute": brutalism.brute_search(archive.db, vectors[q], 10, cos)}
            for name, found in results.items():
                got = np.array([int(r.window_id) for r in sorted(found, reverse=True)])
                if exact_ids:
                    assert got.tolist() == ids[order].tolist(), name
                else:  # neighbours up to float16 ties: the k-th result scores as the true k-th neighbour
                    np.testing.assert_allclose(true[np.searchsorted(ids, got)], true[order], atol=2e-3, err_msg=name)
            hits = agile.search_vectors(archive, vectors[q], top=10)
            assert [h.window_id for h in hits] == ids[order].tolist()  # rescored in float32: exact
            np.testing.assert_allclose([h.score for h in hits], true[order], atol=1e-5)

    # The tiny model's embeddings lie within a few degrees of each other (cosine ~0.98), where hoplite's float16
    # rescoring ties; well-separated vectors in a database of the same kind must give the very same ids.
    check(agile.Archive.open(archive_path, readonly=True), (0, 7, 33), exact_ids=False)
    archive = agile.Archive.open(archive_path, readonly=True)
    spread = tmp_path / "spread"
    settings = dict(archive.settings)
    other = agile.Archive.create_or_open(spread, settings)
    rng = np.random.default_rng(1)
    recording = other.db.insert_recording(filename="x.wav", deployment_id=1, size=0, mtime_ns=0, duration_s=0.0)
    other.db.insert_windows_batch([{"recording_id": recording, "offsets": [float(i), float(i + 1)], "channel": -1,
                                    "flags": 0} for i in range(200)],
                                  rng.standard_normal((200, settings["embedding_dim"])).astype(np.float32),
                                  handle_duplicates="allow")
    other.db.commit()
    check(agile.Archive.open(spread, readonly=True), (0, 50, 199), exact_ids=True)


def test_retrieval_from_the_database_equals_the_metric(model, data, tmp_path):
    from avex_hub.heads.metrics import retrieval_per_query

    agile.index_files(model, [data.root / "clips"], tmp_path / "clips", window_s=WINDOW,
                      progress=False)
    archive = agile.Archive.open(tmp_path / "clips", readonly=True)
    table = archive.window_table()
    labels = np.array([os.path.basename(os.path.dirname(f)) for f in table["file"]])
    vectors = archive.vectors(table["window_id"])
    n = len(vectors)
    assert n == 24
    auc, hit = [], []
    for i in range(n):
        hits = [h for h in agile.search_vectors(archive, vectors[i], top=n, exact=True) if h.window_id != table["window_id"][i]]
        row = np.searchsorted(table["window_id"], [h.window_id for h in hits])
        scores, positive = np.array([h.score for h in hits]), labels[row] == labels[i]
        pos, neg = scores[positive], scores[~positive]
        auc.append(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))
        hit.append(positive[0])
    reference = retrieval_per_query(vectors, labels)
    np.testing.assert_allclose(auc, reference["roc_auc"], atol=1e-6)
    assert np.mean(hit) == pytest.approx(reference["hit"].mean())


# -- indexing: resumable, refuses other settings ----------------------------------------------------------------
def test_index_adds_new_files_only_and_survives_interruptions(model, data, tmp_path, monkeypatch):
    folder = tmp_path / "rec"
    folder.mkdir()
    for p in data.long_recordings:
        shutil.copy(p, folder / p.name)
    db = tmp_path / "db"
    import avex_hub.integrations.agile as module

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


def test_a_query_shorter_than_the_model_minimum_is_refused(model, data, archive_path):
    archive = agile.Archive.open(archive_path, readonly=True)
    with pytest.raises(ValueError, match=r"0\.050 s long; the model needs at least 0\.175 s"):
        agile.search(archive, model, [agile.Query(str(data.long_recordings[0]), 1.0, 1.05)])
    with pytest.raises(FileNotFoundError, match="FILE:START-END"):
        agile.parse_query("nothing.wav:1-2x")
    assert agile.parse_query(f"{data.long_recordings[0]}:1.5-3") == agile.Query(str(data.long_recordings[0]), 1.5, 3.0)


def test_several_queries_average_or_max_their_scores(model, data, archive_path):
    archive = agile.Archive.open(archive_path, readonly=True)
    queries = [agile.Query(str(data.long_recordings[0]), 2.0, 3.0), agile.Query(str(data.long_recordings[1]), 5.0, 6.5)]
    q = agile.embed_queries(model, queries, archive.settings)
    ids = archive.window_table()["window_id"]
    v = archive.vectors(ids)
    cos = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    for combine, reduce in (("mean", cos.mean(1)), ("max", cos.max(1))):
        hits = agile.search(archive, model, queries, top=5, combine=combine, exact=True)
        assert [h.window_id for h in hits] == ids[np.argsort(-reduce, kind="stable")][:5].tolist()
        np.testing.assert_allclose([h.score for h in hits], np.sort(reduce)[::-1][:5], atol=1e-5)


# -- labels, classifier, detection ------------------------------------------------------------------------------
def test_labels_from_a_csv_live_in_the_database_and_relabelling_replaces(archive_path, tmp_path):
    shutil.copytree(archive_path, tmp_path / "db")
    archive = agile.Archive.open(tmp_path / "db")
    hits = agile.search_vectors(archive, archive.vectors([5])[0], top=4)
    path = agile.write_hits_csv(hits, tmp_path / "hits.csv", label="Sweepus")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    rows[1]["label_type"], rows[3]["label"] = "negative", ""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=agile.HIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert agile.add_labels_csv(archive, path) == 3
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


def test_train_and_detect_find_the_species(model, data, archive_path, tmp_path, tiny_dir):
    from avex_hub.heads.probes import load_probe

    shutil.copytree(archive_path, tmp_path / "db")
    archive = agile.Archive.open(tmp_path / "db")
    table = archive.window_table()
    truth = np.array(truth_labels(data, table))
    species = data.labels[0]
    positive = truth == species
    train = np.arange(len(truth)) % 2 == 0
    agile.add_labels(archive, [(int(w), species, "positive" if p else "negative")
                               for w, p in zip(table["window_id"][train], positive[train])])
    path = agile.train_classifier(archive, tmp_path / "probe.safetensors")
    detections = agile.detect(archive, path)
    scores = detections.scores[:, 0]
    assert detections.labels == [species] and len(scores) == len(archive)
    def auc(rows):
        pos, neg = scores[rows & positive], scores[rows & ~positive]
        assert len(pos) and len(neg)
        return (pos[:, None] > neg[None]).mean()

    # The tiny fixture is a random-weight model, so only a rough separation is expected on held-out windows
    # (measured 0.71); the labelled windows themselves must be fitted.
    assert auc(train) > 0.9 and auc(~train) > 0.6, (auc(train), auc(~train))
    # The probe file is our format: loads with load_probe and scores model embeddings as detect did.
    probe = load_probe(path)
    assert probe.provenance.backbone_sha256 == model.weights_sha256 and probe.provenance.label_names == (species,)
    start = table["start_s"][3]
    from avex_hub.audio.contract import load_audio

    audio = load_audio(table["file"][3], start_s=start, end_s=start + WINDOW).waveform
    with torch.no_grad():
        fresh = torch.sigmoid(probe.forward_embeddings(model.embed(audio)))[0, 0].item()
    assert fresh == pytest.approx(scores[3], abs=2e-3)  # the archive stores float16 vectors
    hub_probe = torch.hub.load(str(REPO_ROOT), "load_probe", str(path), source="local", checkpoint=str(tiny_dir))
    with torch.no_grad():
        assert torch.sigmoid(hub_probe(audio))[0, 0].item() == pytest.approx(scores[3], abs=2e-3)
    # Margin sampling: the windows nearest the threshold, brute force.
    nearest = detections.uncertain(5)
    assert [h.window_id for h in nearest] == table["window_id"][np.argsort(np.abs(scores - 0.5), kind="stable")][:5].tolist()
    top = detections.top(3)
    assert [h.score for h in top] == pytest.approx(np.sort(scores)[::-1][:3].tolist())


def test_training_without_negatives_says_what_to_label(archive_path, tmp_path):
    shutil.copytree(archive_path, tmp_path / "db")
    archive = agile.Archive.open(tmp_path / "db")
    with pytest.raises(ValueError, match="no labels yet"):
        agile.train_classifier(archive, tmp_path / "p.safetensors")
    agile.add_labels(archive, [(1, "a", "positive"), (2, "a", "positive")])
    with pytest.raises(ValueError, match=r"a \(2 positive, 0 negative\)"):
        agile.train_classifier(archive, tmp_path / "p.safetensors")
    assert not (tmp_path / "p.safetensors").exists()


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


# -- the command line -------------------------------------------------------------------------------------------
def test_cli_runs_the_whole_loop(data, tmp_path, tiny_dir):
    ck = ["--checkpoint", str(tiny_dir)]
    db = tmp_path / "archive"
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
                 *ck]) == 0
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
                 *ck]) == 0  # nothing new
    assert len(agile.Archive.open(db, readonly=True)) == 38
    events = list(csv.DictReader(open(data.annotations, encoding="utf-8")))
    species = data.labels[0]
    first = next(r for r in events if r["label"] == species)
    query = f"{data.root / first['path']}:{float(first['start_s']):.3f}-{float(first['end_s']):.3f}"
    hits_csv = tmp_path / "hits.csv"
    assert main(["search", "--db", str(db), "--query", query, "--top", "38", "--out", str(hits_csv), "--raven",
                 str(tmp_path / "hits"), "--label", species, "--no-progress", *ck]) == 0
    rows = list(csv.DictReader(open(hits_csv, encoding="utf-8")))
    assert len(rows) == 38 and [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    assert len(list((tmp_path / "hits").glob("*.selections.txt"))) == 2
    # The user labels the hits: positive where the species calls, negative elsewhere.
    table = agile.Archive.open(db, readonly=True).window_table()
    truth = dict(zip(table["window_id"].tolist(), truth_labels(data, table)))
    for r in rows:
        r["label_type"] = "positive" if truth[int(r["window_id"])] == species else "negative"
    with open(hits_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=agile.HIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert main(["label", "--db", str(db), str(hits_csv)]) == 0
    probe = tmp_path / "probe.safetensors"
    assert main(["train-classifier", "--db", str(db), "--out", str(probe)]) == 0
    out = tmp_path / "detections.csv"
    assert main(["detect", "--db", str(db), "--probe", str(probe), "--out", str(out), "--raven", str(tmp_path / "t"),
                 "--uncertain", "5"]) == 0
    scored = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(scored) == 38 and list(scored[0])[-1] == species
    above = sum(float(r[species]) >= 0.5 for r in scored)
    tables = list((tmp_path / "t").glob("*.selections.txt"))
    assert sum(len(t.read_text().splitlines()) - 1 for t in tables) == above
    assert len(list(csv.DictReader(open(out.with_suffix(".uncertain.csv"), encoding="utf-8")))) == 5
    # Another database's settings: a usage error naming both.
    assert main(["index", str(data.root / "long"), "--db", str(db), "--window", "3", "--no-progress", *ck]) == 2
    assert main(["search", "--db", str(tmp_path / "none"), "--query", query, "--out", str(hits_csv), *ck]) == 2


def test_cli_index_lists_unreadable_inputs_and_keeps_the_others(data, tmp_path, tiny_dir):
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(data.long_recordings[0], folder / "good.wav")
    (folder / "broken.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt not really")
    db = tmp_path / "db"
    argv = ["index", str(folder), "--db", str(db), "--window", "2", "--hop", "1", "--no-progress",
            "--checkpoint", str(tiny_dir)]
    assert main(argv) == 3
    failures = list(csv.DictReader(open(db / "failures.csv", encoding="utf-8")))
    assert [os.path.basename(r["path"]) for r in failures] == ["broken.wav"]
    archive = agile.Archive.open(db, readonly=True)
    assert len(archive) == 19 and set(archive.window_table()["file"]) == {str(folder / "good.wav")}
    (folder / "broken.wav").unlink()
    assert main(argv) == 0 and not (db / "failures.csv").exists()


def test_from_config_builds_the_model_and_places_it_as_the_command_line_does(tiny_dir):
    from ml_collections import config_dict

    adapter = agile.AvexEmbeddingModel.from_config(config_dict.ConfigDict({"checkpoint": str(tiny_dir), "layer": 1}))
    assert adapter.device == "auto" and adapter.settings["layers"] == [1]
    assert adapter._device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pinned = agile.AvexEmbeddingModel.from_config({"checkpoint": str(tiny_dir), "device": "cpu"})
    assert pinned._device == torch.device("cpu")
    out = pinned.embed(np.zeros(32000, np.float32))
    assert out.embeddings.shape[:2] == (1, 1)
