"""Training and detection (avex_hub.integrations.agile.classify).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402
from agile_support import WINDOW, archive_path, data, truth_labels  # noqa: E402,F401 - data, archive_path: fixtures

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
    from avex_hub.audio.contract import load_audio

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
