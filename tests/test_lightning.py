"""Fine-tuning with Lightning: LLRD groups, schedule, freezing, improvement over a frozen probe, resume, export,
label checks, metrics, bf16, the data module and sharded prediction on one process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
import lightning as L  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import avex_hub  # noqa: E402
from avex_hub.heads import finetune  # noqa: E402
from avex_hub.integrations.lightning import (  # noqa: E402
    AvexClassifier, AvexDataModule, ShardedPredictionWriter, AvexLightningEmbedder, merge_shards,
)
from avex_hub.audio.datasets import AudioDataset  # noqa: E402
from avex_hub.audio.synthetic import make_synthetic_dataset  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
             num_sanity_val_steps=0, enable_checkpointing=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """18 one-second clips of 3 species (train 12 / val 3 / test 3)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("small"), num_species=3, individuals_per_species=1,
                                  clips_per_individual=6, clip_s=1.0, seed=0)


def _tiny(tiny_dir):
    return avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


# -- pure parts: parameter groups, freezing, schedule -----------------------------------------------------------------
def test_layerwise_groups_cover_each_parameter_once_with_decayed_rates(tiny_dir):
    model = _tiny(tiny_dir)  # 3 layers: depths 0 (embeddings) .. 3, head 4
    groups = finetune.layerwise_param_groups(model, lr=1.0, layer_decay=0.5, weight_decay=0.1, unfreeze="all")
    ids = [id(p) for g in groups for p in g["params"]]
    unique = {id(p) for name, p in model.named_parameters() if not name.startswith("backbone.predictor.")}
    assert len(ids) == len(set(ids)) == len(unique)
    table = model.backbone.encoder.layers[0].self_attn.relative_attention_bias.weight
    assert [g["depth"] for g in groups if any(p is table for p in g["params"])] == [0]
    for g in groups:
        assert g["lr"] == 0.5 ** (4 - g["depth"])
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.1)
        if g["weight_decay"]:
            assert all(p.dim() >= 2 for p in g["params"])
    head = [g for g in groups if g["depth"] == 4]
    assert {id(p) for g in head for p in g["params"]} == {id(p) for p in model.classifier.parameters()}


def test_set_trainable_top_layers(tiny_dir):
    model = _tiny(tiny_dir)
    names = finetune.set_trainable(model, 1)
    assert names and all(n.startswith(("classifier.", "backbone.encoder.layers.2.")) for n in names)
    assert not model.backbone.encoder.layers[2].self_attn.relative_attention_bias.weight.requires_grad
    assert finetune.set_trainable(model, 0) == ["classifier.weight", "classifier.bias"]
    everything = finetune.set_trainable(model, "all")
    assert not any(n.startswith("backbone.predictor.") for n in everything)
    with pytest.raises(ValueError, match="0..3"):
        finetune.set_trainable(model, 4)


def test_warmup_cosine_values():
    f = lambda s: finetune.warmup_cosine(s, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)  # noqa: E731
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def test_frozen_parts_stay_in_eval_mode(tiny_dir):
    module = AvexClassifier(_tiny(tiny_dir), labels=["a", "b"], unfreeze=1)
    module.train()
    layers = module.model.backbone.encoder.layers
    assert [layer.training for layer in layers] == [False, False, True]
    assert module.model.classifier.training and not module.model.backbone.encoder.training
    assert not module.model.backbone.patch_embedding.training
    full = AvexClassifier(_tiny(tiny_dir), labels=["a", "b"]).train()
    assert full.model.backbone.encoder.training and not full.model.fbank.training


def _trains(name: str, unfreeze, num_layers: int = 3) -> bool:
    """Whether AvexClassifier's module ``name`` must be in train mode while fitting with ``unfreeze``."""
    inside = lambda prefix: name == prefix or name.startswith(prefix + ".")  # noqa: E731
    if inside("model.backbone.encoder.layers.0.self_attn.relative_attention_bias"):  # shared: depth 0
        return unfreeze == "all"
    if inside("model.fbank") or inside("model.backbone.predictor"):  # no parameters / never trains
        return False
    if unfreeze == "all" or name == "" or inside("model.classifier"):
        return True
    return any(inside(f"model.backbone.encoder.layers.{i}") for i in range(num_layers - unfreeze, num_layers))


@pytest.mark.parametrize("unfreeze", [0, 2, "all"])
def test_fit_runs_exactly_the_trainable_parts_in_train_mode(unfreeze, tiny_dir, small):
    import warnings

    class Modes(L.Callback):  # every module's mode at every training batch, also after each validation
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, *args):
            self.seen.append({name: m.training for name, m in module.named_modules()})

    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=0)
    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, unfreeze=unfreeze, lr=1e-3, seed=0)
    assert not module.model.training  # as build_model returns it: fitting must set the modes
    modes = Modes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(max_epochs=2, callbacks=[modes], **QUIET).fit(module, dm)
    assert len(modes.seen) == 6
    expected = {name: _trains(name, unfreeze) for name in modes.seen[0]}
    assert len(expected) > 40 and sum(expected.values()) > 1 and not all(expected.values())
    for seen in modes.seen:
        assert seen == expected
    assert not [w for w in caught if "in eval mode" in str(w.message)]
    eval_notice = [w for w in warnings.filters if "in eval mode" in str(w[1] and w[1].pattern)]
    assert not eval_notice  # the silencing ended with the fit


# -- the improvement the recipe is for --------------------------------------------------------------------------------
def test_finetune_beats_the_frozen_linear_probe(tiny_dir, tmp_path):
    from avex_hub.heads.metrics import accuracy
    from avex_hub.heads.probes import linear_probe
    from avex_hub.heads.training import train_probe

    data = make_synthetic_dataset(tmp_path / "data", num_species=3, individuals_per_species=2,
                                  clips_per_individual=20, clip_s=1.0, snr_db=10, seed=0,
                                  split_fractions=(0.6, 0.3, 0.1))
    dm = AvexDataModule.from_manifest(data.manifest, clip_s=1.0, batch_size=8, seed=0)
    probe = linear_probe(_tiny(tiny_dir), dm.num_classes, label_names=dm.labels)
    baseline = train_probe(probe, dm.train_set, dm.val_set, seed=0, progress=False).best_metric

    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, lr=2e-3, layer_decay=0.8, mixup=0.5, noise=True,
                            seed=0)
    trainer = L.Trainer(max_epochs=20, **QUIET)
    trainer.fit(module, dm)
    tuned = float(trainer.callback_metrics["val_accuracy"])
    # The logged metric is the accuracy over the validation set, each clip once.
    module.eval()
    with torch.inference_mode():
        batch = dm.val_set.collate([dm.val_set[i] for i in range(len(dm.val_set))])
        logits = module(batch["audio"], batch["padding_mask"])
    assert tuned == pytest.approx(accuracy(batch["label"], logits), abs=1e-6)
    assert float(trainer.callback_metrics["val_items"]) == len(dm.val_set) == 36
    print(f"frozen probe {baseline:.3f} -> fine-tuned {tuned:.3f}")
    assert tuned >= baseline + 0.15, (baseline, tuned)  # measured: 0.50 -> 0.81


# -- resume -----------------------------------------------------------------------------------------------------------
# Harmless here: the resumed Trainer is built with the same (default) callbacks as the one that wrote the checkpoint.
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_from_a_mid_training_checkpoint_matches_the_uninterrupted_run(tiny_dir, small, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Steps(L.Callback):  # what the run actually did: its first weights and how many batches it trained
        def on_train_start(self, trainer, module):
            self.start, self.batches = _weights(module), 0

        def on_train_batch_end(self, *args):
            self.batches += 1

    def run(ckpt_path=None, callbacks=()):
        L.seed_everything(0, verbose=False)
        dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=0)
        module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, lr=2e-3, warmup_steps=2, mixup=0.5, noise=True,
                                seed=3)  # the tiny config's layer drop (0.05) stays on: seeded per step
        settings = {**QUIET, "enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks),
                    "default_root_dir": tmp_path}
        trainer = L.Trainer(max_epochs=3, callbacks=list(callbacks), **settings)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return module, trainer

    saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    first, second = Steps(), Steps()
    full, trainer = run(callbacks=[saver, first])
    assert trainer.global_step == first.batches == 9  # 3 epochs of 12 clips in batches of 4
    mid = tmp_path / "epoch=0.ckpt"  # saved after the first epoch
    resumed, trainer2 = run(ckpt_path=mid, callbacks=[second])
    assert trainer2.global_step == 9 and second.batches == 6  # it continued; it did not start over
    saved = {k[len("model."):]: v for k, v in torch.load(mid, weights_only=True)["state_dict"].items()}
    assert all(torch.equal(second.start[k], saved[k]) for k in saved)
    assert not torch.equal(second.start["classifier.weight"], first.start["classifier.weight"])
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- head only, schedule stepping, the pretrained head ---------------------------------------------------------------
def test_head_only_training_and_lr_schedule(tiny_dir, small):
    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=0)
    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, unfreeze=0, lr=1e-2, layer_decay=0.5,
                            warmup_steps=2, min_lr_ratio=0.1, seed=0)
    before = _weights(module)

    class Modes(L.Callback):  # the frozen backbone stays in eval mode, also after each validation
        seen = []

        def on_train_batch_start(self, trainer, module, *args):
            self.seen.append((module.model.backbone.training, module.model.backbone.encoder.layers[2].training,
                              module.model.classifier.training))

    trainer = L.Trainer(max_epochs=2, callbacks=[Modes()], **QUIET)
    trainer.fit(module, dm)
    assert Modes.seen == [(False, False, True)] * 6
    after = _weights(module)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["classifier.bias", "classifier.weight"]
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == trainer.global_step == 6
    expected = 1e-2 * finetune.warmup_cosine(6, warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
    assert scheduler.get_last_lr() == pytest.approx([expected, expected])  # head: weight and bias groups


def test_pretrained_head_is_reused_when_labels_match(tiny_dir):
    model = _tiny(tiny_dir)
    head = model.classifier.weight.detach().clone()
    module = AvexClassifier(model, labels=None)
    assert torch.equal(module.model.classifier.weight, head) and module.labels == list(model.labels)
    new = AvexClassifier(_tiny(tiny_dir), labels=list(model.labels), head="new")
    assert not torch.equal(new.model.classifier.weight, head)
    with pytest.raises(ValueError, match="head='reuse'"):
        AvexClassifier(_tiny(tiny_dir), labels=["a", "b"], head="reuse")


# -- export / reload --------------------------------------------------------------------------------------------------
def test_export_round_trip_is_exact(tiny_dir, small, tmp_path):
    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=0)
    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, lr=2e-3, seed=0)
    L.Trainer(max_steps=2, limit_val_batches=0, **QUIET).fit(module, dm)
    paths = module.export(tmp_path / "ft")
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["config.json", "label_map.json",
                                                                  "model.safetensors"]
    published = set(load_file(str(tiny_dir / "model.safetensors")))
    assert set(load_file(str(paths["weights"]))) == published  # same key layout as the published file
    config = json.loads(paths["config"].read_text())
    assert config["preprocessing"]["sample_rate"] == 16000 and config["avex_hub"]["backbone_name"] == module.model.name
    assert json.loads(paths["label_map"].read_text()) == {name: i for i, name in enumerate(dm.labels)}

    audio = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    mask = torch.zeros(3, 16000, dtype=torch.bool)
    mask[1, 12000:] = True
    module.eval()
    with torch.inference_mode():
        expected = module(audio, mask)
        for loaded in (avex_hub.esp_aves2_sl_beats_all(checkpoint=tmp_path / "ft"),
                       torch.hub.load(str(REPO_ROOT), "esp_aves2_sl_beats_all", source="local",
                                      checkpoint=str(tmp_path / "ft"))):
            assert loaded.labels == tuple(dm.labels)
            assert torch.equal(loaded(audio, mask), expected)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        module.export(tmp_path / "ft")
    module.export(tmp_path / "ft", overwrite=True)


# -- label checks -----------------------------------------------------------------------------------------------------
# Harmless here: the test fits without validation data on purpose (it checks the label error raised at fit start).
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_label_count_or_order_that_does_not_match_the_data_is_a_clear_error(tiny_dir, small):
    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=0)
    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels + ["Extra species"])
    with pytest.raises(ValueError, match=r"the classifier has 4 classes but the data module has 3"):
        L.Trainer(max_steps=1, **QUIET).fit(module, dm)
    swapped = AvexClassifier(_tiny(tiny_dir), labels=dm.labels[::-1])
    with pytest.raises(ValueError, match="differ"):
        L.Trainer(max_steps=1, **QUIET).fit(swapped, dm)
    loader = dm.train_dataloader()  # plain dataloaders: caught at the first batch
    small_head = AvexClassifier(_tiny(tiny_dir), labels=["a", "b"])
    with pytest.raises(ValueError, match="2 classes"):
        L.Trainer(max_steps=1, **QUIET).fit(small_head, loader)
    with pytest.raises(ValueError, match="labels of the train split and the val split differ"):
        AvexDataModule(train=dm.train_set, val=AvexDataModule.from_manifest(
            small.manifest, label_map=dm.labels[::-1], clip_s=1.0).val_set)


# -- multi-label, bf16 ------------------------------------------------------------------------------------------------
def test_multilabel_bce_and_map_in_bf16(tiny_dir, tmp_path):
    from avex_hub.heads.metrics import mean_average_precision

    data = make_synthetic_dataset(tmp_path / "ml", num_species=3, individuals_per_species=1, clips_per_individual=6,
                                  clip_s=1.0, multilabel_fraction=0.4, seed=1)
    dm = AvexDataModule.from_manifest(data.manifest, clip_s=1.0, batch_size=4, seed=0)
    assert dm.multilabel
    module = AvexClassifier(_tiny(tiny_dir), labels=dm.labels, multilabel=True, lr=2e-3, mixup=1.0, seed=0)
    before = _weights(module)
    trainer = L.Trainer(max_steps=3, precision="bf16-mixed", **QUIET)
    trainer.fit(module, dm)
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert not torch.equal(before["backbone.encoder.layers.1.fc2.weight"],
                           module.model.state_dict()["backbone.encoder.layers.1.fc2.weight"])
    logged = float(trainer.callback_metrics["val_mAP"])
    batch = dm.val_set.collate([dm.val_set[i] for i in range(len(dm.val_set))])
    module.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(batch["audio"], batch["padding_mask"]).float()
    assert logged == pytest.approx(mean_average_precision(batch["target"], logits), abs=1e-6)
    with pytest.raises(ValueError, match="multi-label"):
        L.Trainer(max_steps=1, **QUIET).fit(AvexClassifier(_tiny(tiny_dir), labels=dm.labels), dm)


# -- data module ------------------------------------------------------------------------------------------------------
def test_data_module_splits_batches_and_seeded_order(small):
    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, batch_size=4, seed=5)
    import csv

    rows = list(csv.DictReader(open(small.manifest)))
    for role, split in (("train_set", "train"), ("val_set", "val"), ("test_set", "test")):
        assert len(getattr(dm, role)) == sum(r["split"] == split for r in rows)
    assert dm.labels == sorted(small.labels) and dm.num_classes == 3
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert batch["audio"].shape == (4, 16000) and batch["padding_mask"].dtype == torch.bool
    order = lambda epoch: (loader.sampler.set_epoch(epoch), list(loader.sampler))[1]  # noqa: E731
    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(1)) == list(range(len(dm.train_set)))
    assert dm.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"
    workers = AvexDataModule(train=dm.train_set, val=dm.val_set, batch_size=4, num_workers=1, seed=5)
    in_worker, in_process = next(iter(workers.val_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.equal(in_worker["audio"], in_process["audio"]) and in_worker["path"] == in_process["path"]
    folders = AvexDataModule.from_folders(small.root / "clips", clip_s=0.5, batch_size=2)
    assert folders.labels == dm.labels and len(folders.train_set) == 18
    assert next(iter(folders.train_dataloader()))["audio"].shape == (2, 8000)
    assert AvexDataModule(train=dm.train_set).val_dataloader() == []
    with pytest.raises(ValueError, match="no test dataset"):
        AvexDataModule(train=dm.train_set).test_dataloader()


# -- sharded prediction on one process; merge checks ------------------------------------------------------------------
def test_sharded_prediction_writer_and_merge(tiny_dir, small, tmp_path):
    dm = AvexDataModule.from_manifest(small.manifest, clip_s=1.0, eval_batch_size=4, seed=0,
                                      splits={"train": "train", "predict": "train"})
    model = _tiny(tiny_dir)
    writer = ShardedPredictionWriter(tmp_path / "shards", flush_every=5)
    L.Trainer(callbacks=[writer], **QUIET).predict(AvexLightningEmbedder(model), dm.predict_dataloader(),
                                                   return_predictions=False)
    merged = merge_shards(tmp_path / "shards")
    n = len(dm.predict_set)
    assert merged.num_items == n and merged.duplicates == 0 and merged.world_size == 1
    assert torch.equal(merged.tensors["index"], torch.arange(n))
    batch = dm.predict_set.collate([dm.predict_set[i] for i in range(n)])
    with torch.inference_mode():
        direct = model.embed(batch["audio"], batch["padding_mask"])
    assert torch.allclose(merged.tensors["embedding"], direct, atol=1e-5)
    assert load_file(str(merged.path))["embedding"].shape == (n, model.embedding_dim)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        L.Trainer(callbacks=[ShardedPredictionWriter(tmp_path / "shards")], **QUIET).predict(
            AvexLightningEmbedder(model), dm.predict_dataloader(), return_predictions=False)

    # A run whose rank 1 died, and one that lost a part: refused by name. Repeated rows are dropped.
    fake = tmp_path / "fake"
    fake.mkdir()
    meta = {"format": "avex-hub-shards/1", "run_id": "x", "world_size": 2, "dataset_length": 4}
    save_file({"index": torch.tensor([0, 2, 1, 0]), "embedding": torch.arange(4.0)[:, None]},
              str(fake / "rank00000-part00000.safetensors"))
    (fake / "rank00000.json").write_text(json.dumps({**meta, "rank": 0, "parts": ["rank00000-part00000.safetensors"]}))
    with pytest.raises(FileNotFoundError, match=r"ranks \[1\]"):
        merge_shards(fake)
    (fake / "rank00001.json").write_text(json.dumps({**meta, "rank": 1, "parts": []}))
    with pytest.raises(ValueError, match=r"1 of 4 indices missing \(first: \[3\]\)"):
        merge_shards(fake)
    save_file({"index": torch.tensor([3, 2]), "embedding": torch.tensor([[7.0], [9.0]])},
              str(fake / "rank00001-part00000.safetensors"))
    (fake / "rank00001.json").write_text(json.dumps({**meta, "rank": 1, "parts": ["rank00001-part00000.safetensors"]}))
    result = merge_shards(fake, output=None)
    assert result.duplicates == 2 and result.path is None
    assert result.tensors["embedding"].flatten().tolist() == [0.0, 2.0, 1.0, 7.0]


def test_distributed_extraction_skips_and_reports_unreadable_files(tiny_dir, tmp_path):
    import csv

    import numpy as np

    from avex_hub.integrations.lightning import extract_embeddings_distributed, window_dataset

    data = make_synthetic_dataset(tmp_path / "src", num_species=2, individuals_per_species=1, clips_per_individual=1,
                                  num_long_recordings=2, long_recording_s=3.3, seed=4)
    folder = tmp_path / "src" / "long"
    corrupt = folder / "corrupt.wav"  # no readable header: left out when the windows are listed
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.warns(UserWarning, match="left out 1 files"):
        windows = window_dataset(folder, window_s=1.0)
    assert windows.failures and windows.failures[0][0] == str(corrupt)
    broken = sorted(str(p) for p in data.long_recordings)[0]  # readable when listed, corrupt when decoded
    bad = [i for i, item in enumerate(windows.items) if str(item.path) == broken]
    good = [i for i in range(len(windows)) if i not in bad]
    assert bad == [0, 1, 2, 3] and len(good) == 4  # 3.3 s in 1 s windows; batches of 2 fail whole
    expected = {i: windows[i] for i in good}
    Path(broken).write_bytes(np.random.default_rng(1).bytes(4096))
    model = _tiny(tiny_dir)
    with pytest.warns(UserWarning, match="2 inputs could not be read"):
        merged = extract_embeddings_distributed(model, windows, tmp_path / "shards", batch_size=2, accelerator="cpu",
                                                devices=1, enable_progress_bar=False)
    assert set(merged.failures) == {str(corrupt), broken} and merged.failed_indices == bad
    assert merged.num_items == len(windows) and merged.tensors["index"].tolist() == good
    batch = windows.collate([expected[i] for i in good])
    with torch.inference_mode():
        direct = model.embed(batch["audio"], batch["padding_mask"])
    assert torch.allclose(merged.tensors["embedding"], direct, atol=1e-5)
    with open(tmp_path / "shards" / "failures.csv", newline="") as handle:
        assert {row["path"] for row in csv.DictReader(handle)} == {str(corrupt), broken}
    assert json.loads(_metadata(merged.path)["failures"]) == merged.failures


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_window_dataset_matches_stream_windows(tmp_path):
    from avex_hub.audio.windows import stream_windows
    from avex_hub.integrations.lightning import window_dataset

    data = make_synthetic_dataset(tmp_path / "long", num_species=2, individuals_per_species=1, clips_per_individual=1,
                                  num_long_recordings=2, long_recording_s=3.3, sample_rate=[16000, 22050], seed=2)
    windows = window_dataset(tmp_path / "long" / "long", window_s=1.0, hop_s=0.75)
    streamed = [w for path in data.long_recordings
                for w in stream_windows(path, window_s=1.0, hop_s=0.75)]
    assert len(windows) == len(streamed) > 4
    for i, w in enumerate(streamed):
        item = windows[i]
        assert item["index"] == i and item["path"] == w.path and item["start_s"] == pytest.approx(w.start_s, abs=1e-4)
        assert torch.equal(item["padding_mask"], w.padding_mask)
        if "long_000" in w.path:  # 16 kHz: the same samples (the 22.05 kHz file is resampled per window here but
            assert torch.equal(item["audio"], w.audio)  # as one stream there, so sample values differ slightly)


# (total, window, hop) in 16 kHz samples -> window starts, as stream_windows and window_dataset gave them before
# they shared one rule (window_starts): short input, a window the input's length, exact multiples, ragged ends,
# overlapping hops.
WINDOW_STARTS = [
    ((1, 4000, 4000), [0]),
    ((3999, 4000, 1000), [0]),
    ((4000, 4000, 4000), [0]),
    ((4000, 4000, 1000), [0]),
    ((4001, 4000, 4000), [0, 4000]),
    ((8000, 4000, 4000), [0, 4000]),
    ((9000, 4000, 4000), [0, 4000, 8000]),
    ((12000, 4000, 1000), [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]),
    ((7000, 4000, 3000), [0, 3000]),
    ((7001, 4000, 3000), [0, 3000, 6000]),
    ((10000, 4000, 3000), [0, 3000, 6000]),
    ((5000, 2800, 2800), [0, 2800]),
]


@pytest.mark.parametrize("case, starts", WINDOW_STARTS)
def test_stream_windows_and_window_dataset_cut_the_windows_of_window_starts(tmp_path, case, starts):
    import numpy as np
    import soundfile as sf

    from avex_hub.audio.arrays import SAMPLE_RATE
    from avex_hub.audio.windows import stream_windows, window_starts
    from avex_hub.integrations.lightning import window_dataset

    total, window, hop = case
    assert list(window_starts(total, window, hop)) == starts
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(total, np.float32), SAMPLE_RATE, subtype="FLOAT")
    seconds = dict(window_s=window / SAMPLE_RATE, hop_s=hop / SAMPLE_RATE)
    streamed = [(round(w.start_s * SAMPLE_RATE), round(w.end_s * SAMPLE_RATE)) for w in stream_windows(path, **seconds)]
    items = window_dataset(path, **seconds).items
    listed = [(round(item.start_s * SAMPLE_RATE), round(item.end_s * SAMPLE_RATE)) for item in items]
    expected = [(start, min(start + window, total)) for start in starts]
    assert streamed == listed == expected


def test_window_dataset_counts_a_resampled_file_as_the_decoder_makes_it(tmp_path):
    # 8001 samples at 32 kHz become 4000.5 at 16 kHz: soxr makes 4001 (half up), Python's round said 4000, so the
    # listed windows lacked the one-sample last window that stream_windows (and the CLI) produce.
    import numpy as np
    import soundfile as sf

    from avex_hub.audio.windows import stream_windows
    from avex_hub.integrations.lightning import window_dataset

    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(8001, np.float32), 32000, subtype="FLOAT")
    seconds = dict(window_s=0.25, hop_s=0.25)
    streamed = [(round(w.start_s * 16000), round(w.end_s * 16000)) for w in stream_windows(path, **seconds)]
    listed = [(round(i.start_s * 16000), round(i.end_s * 16000)) for i in window_dataset(path, **seconds).items]
    assert streamed == listed == [(0, 4000), (4000, 4001)]


@pytest.mark.parametrize("option, match", [
    ({"layerdrop": 2.0}, r"layerdrop must be in \[0, 1\)"),
    ({"warmup_fraction": 5.0}, r"warmup_fraction must be in \[0, 1\], got warmup_fraction=5.0"),
    ({"total_steps": 0}, r"total_steps must be an int >= 1, got total_steps=0"),  # was the trainer's estimate
    ({"seed": -1}, r"seed must be an int >= 0, got seed=-1"),
    ({"lr": float("inf")}, r"lr must be a finite number > 0, got lr=inf"),
])
def test_classifier_options_are_refused_by_name(tiny_dir, option, match):
    with pytest.raises(ValueError, match=match):
        AvexClassifier(_tiny(tiny_dir), labels=["a", "b"], **option)


def test_data_module_options_are_refused_by_name(small):
    train = AudioDataset.from_manifest(small.manifest, split="train", clip_s=1.0)
    for option, match in (({"batch_size": True}, r"batch_size must be an int >= 1, got batch_size=True"),
                          ({"seed": -1}, r"seed must be an int >= 0, got seed=-1"),
                          ({"num_workers": 1.5}, r"num_workers must be an int >= 0")):
        with pytest.raises(ValueError, match=match):
            AvexDataModule(train, **option)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0 or None"):
        AudioDataset.from_manifest(small.manifest, split="train", seed=-1)  # failed later, on the first crop


def test_training_data_that_gives_no_step_says_so(tiny_dir, small):
    # Issue 27: both failed on "need warmup_steps >= 0, total_steps >= 1", which does not mention the data.
    train = AudioDataset.from_manifest(small.manifest, split="train", clip_s=1.0)  # 12 clips
    data = AvexDataModule(train, batch_size=50, drop_last=True)
    module = AvexClassifier(_tiny(tiny_dir), labels=data.labels, unfreeze=0)
    with pytest.raises(ValueError, match=r"drop_last=True with batch_size=50 leaves no training batch: 12 training "
                                         r"items per device; lower batch_size or pass drop_last=False"):
        L.Trainer(max_epochs=1, **QUIET).fit(module, data)
    empty = torch.utils.data.DataLoader(torch.utils.data.Subset(train, []), batch_size=4, collate_fn=train.collate)
    module = AvexClassifier(_tiny(tiny_dir), labels=data.labels, unfreeze=0)
    with warnings.catch_warnings(), \
            pytest.raises(ValueError, match=r"the training data gives no optimiser step: the train split is empty"):
        # Lightning's own notices about the situation tested here (a zero-length loader, no validation loader)
        warnings.filterwarnings("ignore", message=r"Total length of `(Combined|Data)Loader` across ranks is zero")
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        L.Trainer(max_epochs=1, **QUIET).fit(module, empty)
