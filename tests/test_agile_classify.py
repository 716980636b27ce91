"""Training and detection (avex_hub.integrations.agile.classify).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402
from agile_support import HOP, WINDOW, archive_path, copy_archive, data, truth_labels  # noqa: E402,F401 - data, archive_path: fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    from avex_hub.audio.decoding import load_audio

    audio = load_audio(table["file"][3], start_s=start, end_s=start + WINDOW).waveform
    with torch.no_grad():
        fresh = torch.sigmoid(probe.forward_embeddings(model.embed(audio)))[0, 0].item()
    assert fresh == pytest.approx(scores[3], abs=2e-3)  # the archive stores float16 vectors
    hub_probe = torch.hub.load(str(REPO_ROOT), "load_probe", str(path), source="local", checkpoint=str(tiny_dir))
    with torch.no_grad():
        assert torch.sigmoid(hub_probe(audio))[0, 0].item() == pytest.approx(scores[3], abs=2e-3)
    # Margin sampling: the windows nearest the threshold, brute force; those labelled already are left out
    # unless asked for (on main they were offered again).
    margin = np.argsort(np.abs(scores - 0.5), kind="stable")
    assert [h.window_id for h in detections.uncertain(5, include_labelled=True)] == table["window_id"][margin][:5].tolist()
    unlabelled = margin[~train[margin]]
    nearest = detections.uncertain(5)
    assert [h.window_id for h in nearest] == table["window_id"][unlabelled][:5].tolist()
    assert not set(h.window_id for h in nearest) & set(table["window_id"][train].tolist())
    for bad in (-5, 2.5, True):
        with pytest.raises(ValueError, match="count must be an int >= 0"):
            detections.uncertain(bad)
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


def test_a_probe_of_another_window_length_is_refused(model, data, archive_path, tmp_path):
    """On main `detect` scored an archive of 3 s windows with a probe trained on 2 s windows without complaint."""
    db = copy_archive(archive_path, tmp_path / "db")
    archive = agile.Archive.open(db)
    table = archive.window_table()
    agile.add_labels(archive, [(int(w), "x", "positive" if i % 2 else "negative")
                               for i, w in enumerate(table["window_id"][:6])])
    probe = agile.train_classifier(archive, tmp_path / "p.safetensors", epochs=5)
    from avex_hub.heads.probes import load_probe

    assert load_probe(probe).provenance.metrics["archive"] == {
        "archive_id": archive.identity, "window_s": 2.0, "hop_s": 1.0, "channels": "mix", "sample_rate": 16000,
        "precision": "fp32"}
    longer = tmp_path / "longer"
    agile.index_files(model, [data.long_recordings[0]], longer, window_s=3.0, hop_s=HOP, progress=False)
    with pytest.raises(agile.SettingsMismatchError, match=r"window_s: probe 2.0, database 3.0"):
        agile.detect(agile.Archive.open(longer, readonly=True), probe)
    # A probe that records no window length (trained elsewhere on the same embeddings) is applied with a notice.
    from avex_hub.heads.probes import save_probe

    bare = load_probe(probe)
    bare.provenance = dataclasses.replace(bare.provenance, metrics={})
    save_probe(bare, tmp_path / "bare.safetensors")
    with pytest.warns(agile.ArchiveNotice, match="the probe does not record the window length it was trained on; "
                                                 "this archive's windows are 3.0 s"):
        agile.detect(agile.Archive.open(longer, readonly=True), tmp_path / "bare.safetensors")


def test_training_options_are_checked_before_the_work(archive_path, tmp_path):
    archive = agile.Archive.open(archive_path, readonly=True)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="epochs must be a positive int"):
            agile.train_classifier(archive, tmp_path / "p.safetensors", epochs=bad)
    with pytest.raises(ValueError, match="lr must be > 0"):
        agile.train_classifier(archive, tmp_path / "p.safetensors", lr=0.0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        agile.detect(archive, tmp_path / "missing.safetensors", threshold=1.0)


def test_the_classifier_is_trained_by_the_package_s_one_loop_with_unknown_targets_left_out(archive_path, tmp_path):
    """Issue 22: train_classifier is heads.training.train_probe on the standardised stored vectors (no loop of its
    own); a window labelled for one class only has no target for the others (nan), which the loop leaves out."""
    from avex_hub.embed.embeddings import Embeddings
    from avex_hub.heads.probes import Probe, load_probe
    from avex_hub.heads.training import train_probe

    archive = agile.Archive.open(copy_archive(archive_path, tmp_path / "db"))
    ids = archive.window_table()["window_id"]
    agile.add_labels(archive, [(int(w), "a", "positive" if i % 3 == 0 else "negative") for i, w in enumerate(ids[:12])]
                     + [(int(w), "b", "positive" if i % 2 else "negative") for i, w in enumerate(ids[12:20])])
    labelled, targets, names = agile.labelled_windows(archive)
    assert names == ["a", "b"] and np.isnan(targets).any()  # windows judged for "a" only, not positive: b unknown
    saved = load_probe(agile.train_classifier(archive, tmp_path / "p.safetensors", epochs=40, seed=3))
    x = torch.from_numpy(archive.vectors(labelled))
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    probe = Probe(None, 2, layers=archive.settings["layers"], embedding_dim=x.shape[1], multilabel=True,
                  label_names=names, seed=3)
    result = train_probe(probe, Embeddings.from_arrays((x - mean) / scale, targets, layers=archive.settings["layers"],
                                                      label_names=names),
                         epochs=40, lr=0.01, weight_decay=1e-3, batch_size=len(x), seed=3, val_fraction=0.0,
                         progress=False)
    torch.testing.assert_close(saved.head.weight, probe.head.weight / scale)
    torch.testing.assert_close(saved.head.bias, probe.head.bias - (probe.head.weight * mean / scale).sum(1))
    metrics = saved.provenance.metrics
    assert metrics["epochs"] == 40 and metrics["train_loss"] == pytest.approx(result.history[-1]["train_loss"])
    assert metrics["positives/a"] == 4 and metrics["negatives/b"] == 4 + 4  # b's negatives: 4 judged, 4 positive for a
