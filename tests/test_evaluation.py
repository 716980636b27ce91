"""The evaluation protocol end to end: synthetic data -> probe via the public API -> table rows equal direct metrics."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import avex_hub
from avex_hub.audio.datasets import AudioDataset
from avex_hub.embed.extract import Embeddings, extract_embeddings
from avex_hub.heads.evaluation import compare_layers, compare_models, evaluate, resolve_splits, side_by_side
from avex_hub.heads.metrics import accuracy, clustering_nmi, mean_average_precision, retrieval_metrics
from avex_hub.audio.synthetic import make_synthetic_dataset
from avex_hub.heads.training import split_indices, train_probe
from conftest import blobs

ROWS = [("probe", "accuracy"), ("retrieval", "roc_auc"), ("retrieval", "precision_at_1"), ("clustering", "nmi")]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_dataset(root, num_species=4, individuals_per_species=2, clips_per_individual=6, clip_s=1.0)


@pytest.fixture(scope="module")
def dataset(synthetic):
    return AudioDataset.from_manifest(synthetic.manifest, clip_s=1.0)  # all rows; items carry their split


def _blobs(n: int, k: int, dim: int, seed: int) -> Embeddings:
    """conftest's blobs as Embeddings of layer 5."""
    return Embeddings.from_arrays(*blobs(n, k, dim, seed, center_seed=99, spread=3.0), layers=[5])


def test_end_to_end_rows_equal_direct_metrics(model, tiny_dir, synthetic, dataset):
    table = evaluate(model, dataset, dataset_name="synthetic", seed=0)
    assert [(r.task, r.metric) for r in table] == ROWS
    assert {(r.model, r.layer, r.dataset) for r in table} == {("esp_aves2_sl_beats_all", 3, "synthetic")}

    # The independent route: the manifest's splits, a frozen linear probe through the public API, scored on audio.
    splits = {s: AudioDataset.from_manifest(synthetic.manifest, split=s, clip_s=1.0) for s in ("train", "val", "test")}
    backbone = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    probe = avex_hub.linear_probe(backbone, 4, seed=0)
    train_probe(probe, splits["train"], splits["val"], seed=0, progress=False)
    batch = AudioDataset.collate([splits["test"][i] for i in range(len(splits["test"]))])
    with torch.no_grad():
        logits = probe(batch["audio"], batch["padding_mask"])
    test = extract_embeddings(model, splits["test"], progress=False)
    scores = {(r.task, r.metric): r.score for r in table}
    assert scores["probe", "accuracy"] == pytest.approx(accuracy(batch["label"], logits), abs=1e-12)
    direct = retrieval_metrics(test.embeddings, test.labels)
    assert scores["retrieval", "roc_auc"] == pytest.approx(direct["roc_auc"], abs=1e-6)
    assert scores["retrieval", "precision_at_1"] == pytest.approx(direct["precision_at_1"], abs=1e-6)
    assert scores["clustering", "nmi"] == pytest.approx(clustering_nmi(test.embeddings, test.labels, seed=0), abs=1e-6)


def test_details_and_learned_layer_mix(model, dataset):
    ev = evaluate(model, dataset, layers="all", details=True)
    assert ev.table.rows[0].layer == "all" and ev.embeddings["test"].embeddings.shape[1:] == (4, 64)
    w = ev.probe.layer_weights.detach()
    assert not torch.allclose(w, torch.full((4,), 0.25))  # learned, and used for retrieval and clustering
    manual = sum(w[i] * ev.embeddings["test"].embeddings[:, i] for i in range(4))
    assert torch.allclose(ev.representation, manual, atol=1e-6)
    test_labels = ev.embeddings["test"].labels
    assert ev.table.rows[0].score == accuracy(test_labels, ev.test_logits)
    assert ev.table.rows[3].score == pytest.approx(clustering_nmi(manual, test_labels, seed=0), abs=1e-6)
    assert ev.train_result.metric_name == "accuracy" and ev.train_result.best_epoch >= 1


def test_embeddings_in_seeded_split_and_separable_scores():
    emb = _blobs(300, 3, 16, seed=0)
    table = evaluate(emb, seed=4)
    scores = {(r.task, r.metric): r.score for r in table}
    assert scores["probe", "accuracy"] > 0.95 and scores["retrieval", "roc_auc"] > 0.95
    assert scores["clustering", "nmi"] > 0.8
    train, test = split_indices(emb.labels, 0.3, 4)  # the documented split, given explicitly
    assert evaluate((emb.subset(train), emb.subset(test)), seed=4) == table
    assert evaluate({"train": emb.subset(train), "test": emb.subset(test)}, seed=4) == table


def test_multilabel_rows(model, tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=3, individuals_per_species=2, clips_per_individual=4,
                                  clip_s=0.5, multilabel_fraction=0.5)
    dataset = AudioDataset.from_manifest(data.manifest, clip_s=0.5)
    assert dataset.multilabel
    ev = evaluate(model, dataset, details=True)
    assert [(r.task, r.metric) for r in ev.table] == [("probe", "mAP"), ("retrieval", "roc_auc"),
                                                      ("retrieval", "precision_at_1")]  # no NMI for multi-hot
    test = ev.embeddings["test"]
    assert test.labels.shape == (len(test), 3) and ev.train_result.metric_name == "mAP"
    assert ev.table.rows[0].score == pytest.approx(mean_average_precision(test.labels, ev.test_logits), abs=1e-12)
    direct = retrieval_metrics(test.embeddings, test.labels)
    assert [r.score for r in ev.table.rows[1:]] == pytest.approx([direct["roc_auc"], direct["precision_at_1"]])


def test_compare_layers_and_models(model, dataset):
    table = compare_layers(model, dataset, layers=[1, "last", "all"])
    assert [r.layer for r in table] == [1] * 4 + [3] * 4 + ["all"] * 4
    single = evaluate(model, dataset, layers=1)
    assert [r.score for r in table.rows[:4]] == pytest.approx([r.score for r in single], abs=1e-6)
    grid = side_by_side(table, by="layer")
    assert grid.columns == ("task", "dataset", "metric", "model", "1", "3", "all") and len(grid.rows) == 4
    assert grid.rows[0][4:] == tuple(table.rows[i].score for i in (0, 4, 8))

    a, b = _blobs(200, 4, 16, seed=0), _blobs(200, 4, 16, seed=1)
    b.embeddings = b.embeddings * 0 + torch.randn(200, 16, generator=torch.Generator().manual_seed(3))  # no signal
    both = compare_models({"good": a, "noise": b})
    assert {r.model for r in both} == {"good", "noise"} and len(both) == 8
    grid = side_by_side(both)
    good, noise = grid.columns.index("good"), grid.columns.index("noise")
    assert all(row[good] > row[noise] for row in grid.rows)


def test_attention_probe_evaluation(model, tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=2, individuals_per_species=2, clips_per_individual=4,
                                  clip_s=0.5)
    small = AudioDataset.from_manifest(data.manifest, clip_s=0.5)
    ev = evaluate(model, small, probe="attention", train_kwargs={"epochs": 1}, details=True)
    assert ev.train_result.mode == "online" and [(r.task, r.metric) for r in ev.table] == ROWS
    assert ev.table.rows[0].score == accuracy(ev.embeddings["test"].labels, ev.test_logits)
    assert all(r.score == r.score for r in ev.table)  # no nan: every test query has a positive and a negative


def test_bad_evaluation_inputs(model, dataset):
    emb = _blobs(30, 3, 8, seed=0)
    with pytest.raises(ValueError, match="pass the dataset"):
        evaluate(model)
    with pytest.raises(ValueError, match="probe must be one of"):
        evaluate(emb, probe="svm")
    with pytest.raises(ValueError, match="probe must be one of"):  # before the data is split or embedded
        evaluate(model, (object(), object()), probe="svm")
    with pytest.raises(ValueError, match="keys 'train' and 'test'"):
        resolve_splits({"train": emb})
    with pytest.raises(ValueError, match="needs the model and audio"):
        evaluate(emb, probe="attention")
    with pytest.raises(ValueError, match="no labels"):
        evaluate(Embeddings.from_arrays(torch.randn(10, 8)))
    with pytest.raises(ValueError, match=r"layers \[7\] were not extracted"):
        evaluate(emb, layers=7)
    with pytest.raises(ValueError, match="empty"):
        resolve_splits((emb, emb.subset([])))
    with pytest.raises(TypeError, match="AvexModel or Embeddings"):
        evaluate("model.safetensors")
    with pytest.raises(ValueError, match="out of range"):
        evaluate(model, dataset, layers=[8])


def test_every_metric_evaluate_reports_has_its_model_card_name():
    # Notebook 04 shows our rows beside the model card's table under the card's names: a metric evaluate starts to
    # report without a card name would stop that table with a KeyError.
    from avex_hub.heads.evaluation import CARD_METRIC_NAMES

    single = {r.metric for r in evaluate(_blobs(60, 3, 8, seed=1), seed=0)}
    y = torch.nn.functional.one_hot(torch.arange(60) % 3, 3).float()
    y[::4, (torch.arange(60)[::4] + 1) % 3] = 1.0  # a quarter of the clips carry two labels
    multi = {r.metric for r in evaluate(Embeddings.from_arrays(_blobs(60, 3, 8, seed=2).embeddings, y), seed=0)}
    assert single == {"accuracy", "roc_auc", "precision_at_1", "nmi"} and "mAP" in multi
    assert single | multi <= set(CARD_METRIC_NAMES)
    assert [CARD_METRIC_NAMES[m] for m in ("accuracy", "mAP", "roc_auc", "nmi")] == ["Accuracy", "mAP", "ROC AUC", "NMI"]


def test_split_audio_keeps_the_datasets_settings(synthetic):
    crops = AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5, random_crop=True, seed=3, channels=0)
    splits = resolve_splits(crops)  # the manifest's split column
    assert sorted(splits) == ["test", "train", "val"]
    for role, part in splits.items():
        assert (part.clip_s, part.random_crop, part.seed, part.channels, part.labels) == (0.5, True, 3, 0, crops.labels)
        assert part.source == f"{crops.source} ({role} split)"
        assert {item.extra["split"] for item in part.items} == {role}
    assert sum(len(part) for part in splits.values()) == len(crops)
    unmarked = AudioDataset([dataclasses.replace(item, extra={}) for item in crops.items], clip_s=0.5, seed=4)
    halves = resolve_splits(unmarked, test_fraction=0.5, seed=1)  # split by test_fraction, stratified
    assert (len(halves["train"]), len(halves["test"])) == (len(crops) // 2, len(crops) // 2)
    assert halves["test"].seed == 4 and halves["test"].source == "the given items (test split)"
    np.testing.assert_array_equal(np.bincount(halves["test"].targets), np.bincount(unmarked.targets) // 2)


def _respelt(synthetic, folder, spell) -> Path:
    """The synthetic manifest with each row's split cell rewritten by ``spell(line, value)`` (paths made absolute)."""
    with open(synthetic.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    target = folder / "manifest.csv"
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for line, row in enumerate(rows, start=2):
            writer.writerow(row | {"path": str(synthetic.manifest.parent / row["path"]),
                                   "split": spell(line, row["split"])})
    return target


def test_manifest_splits_are_the_users_in_any_common_spelling(synthetic, tmp_path):
    # A manifest in other spellings (issue 27: "valid", "TRAIN" ... were thrown away and the rows split 70/30 at
    # random, train rows ending up in test): every row stays in the split it declares.
    spellings = {"train": ["train", "Training", " TRAIN "], "val": ["valid", "VALIDATION", "dev", "Val"],
                 "test": ["test", "Testing", "TEST"]}
    respelt = _respelt(synthetic, tmp_path, lambda line, split: spellings[split][line % len(spellings[split])])
    declared = _declared(synthetic.manifest)
    splits = resolve_splits(AudioDataset.from_manifest(respelt, clip_s=1.0))
    assert {role: {str(item.path) for item in part.items} for role, part in splits.items()} == declared
    train = AudioDataset.from_manifest(respelt, split="training", clip_s=1.0)
    assert {str(item.path) for item in train.items} == declared["train"]
    assert {item.extra["split"] for item in train.items} == {"train"}


def _declared(manifest: Path) -> dict[str, set[str]]:
    """The files of each split a manifest declares."""
    out: dict[str, set[str]] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["split"], set()).add(str(manifest.parent / row["path"]))
    return out


@pytest.mark.parametrize("cell, message", [("tst", r"line 5: split='tst'"), ("", r"line 5: no split \(empty cell\)")])
def test_a_dataset_that_declares_splits_is_never_split_again(synthetic, tmp_path, cell, message):
    bad = _respelt(synthetic, tmp_path, lambda line, split: cell if line == 5 else split)
    dataset = AudioDataset.from_manifest(bad, clip_s=1.0)
    with pytest.raises(ValueError, match=rf"declares splits, but 1 rows are in none of train, val, test[\s\S]*"
                                         rf"{message}"):
        resolve_splits(dataset)
    only_train = AudioDataset.from_manifest(synthetic.manifest, split="train", clip_s=1.0)
    with pytest.raises(ValueError, match=r"declares splits \['train'\] but no test rows"):
        resolve_splits(only_train)  # once split 70/30 at random: its own train rows scored as test
    with pytest.raises(ValueError, match=r"no rows of .* have split \['tst'\]; splits present: "
                                         r"\['test', 'train', 'val'\]"):
        AudioDataset.from_manifest(synthetic.manifest, split=["train", "tst"])  # the unknown name was ignored


def test_splits_built_separately_are_scored_by_label_name():
    # Issue 27: a test set lacking one class, re-indexed in its own order, was scored against the train ids (a
    # separable problem reported 0.0 where the truth was about 1).
    x, y = blobs(300, 3, 16, seed=0, center_seed=99, spread=3.0)
    names = ["ant", "bee", "cicada"]
    train = Embeddings.from_arrays(x[:200], y[:200], layers=[5], label_names=names)
    rows = torch.nonzero(y[200:] != 1)[:, 0] + 200  # the test split has no "bee"
    own_ids = torch.where(y[rows] == 2, 1, 0)  # its own order: ant 0, cicada 1
    test = Embeddings.from_arrays(x[rows], own_ids, layers=[5], label_names=["ant", "cicada"])
    ev = evaluate((train, test), seed=0, details=True)
    true = y[rows]  # the same clips' classes in the train split's order
    assert ev.embeddings["test"].label_names == names and torch.equal(ev.embeddings["test"].labels, true)
    assert ev.table.rows[0].score == accuracy(true, ev.test_logits) > 0.95
    with pytest.raises(ValueError, match=r"the test split has labels that the train split does not: \['dragonfly'\]"
                                         r"[\s\S]*of the train split \(3\) \['ant', 'bee', 'cicada'\]"
                                         r"[\s\S]*of the test split \(2\) \['ant', 'dragonfly'\]"):
        evaluate((train, Embeddings.from_arrays(x[rows], own_ids, layers=[5], label_names=["ant", "dragonfly"])))


def test_two_class_folders_are_aligned_by_name(model, synthetic, tmp_path):
    # Two AudioDataset.from_folder calls: the test folder lacks a species, so its own label order differs.
    clips = synthetic.manifest.parent / "clips"
    species = sorted(p.name for p in clips.iterdir())
    for name in species[:1] + species[2:]:
        (tmp_path / name).mkdir()
        for wav in sorted((clips / name).glob("*.wav"))[:3]:
            (tmp_path / name / wav.name).symlink_to(wav)
    train, test = AudioDataset.from_folder(clips, clip_s=1.0), AudioDataset.from_folder(tmp_path, clip_s=1.0)
    assert test.labels != train.labels[:len(test.labels)]
    ev = evaluate(model, (train, test), details=True, train_kwargs={"epochs": 5})
    true = torch.tensor([species.index(Path(item.path).parent.name) for item in test.items])
    assert torch.equal(ev.embeddings["test"].labels, true)
    assert ev.table.rows[0].score == accuracy(true, ev.test_logits)
