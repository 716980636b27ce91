"""``sample_rate`` is the rate of the audio passed in; ``target_rate`` the rate a loader resamples to. A dataset
resampled to another rate than the model's can reach no model: every consumer refuses it, naming both rates."""

from __future__ import annotations

import copy

import pytest
import torch

from avex_hub import attention_probe, linear_probe, train_probe
from avex_hub.audio.decoding import load_audio
from avex_hub.audio.datasets import AudioDataset
from avex_hub.audio.synthetic import make_synthetic_dataset
from avex_hub.audio.windows import stream_windows
from avex_hub.embed.extract import extract_embeddings
from avex_hub.heads.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REFUSED = r"yields 48000 Hz audio but esp_aves2_sl_beats_all takes 16000 Hz; build the dataset with target_rate=16000"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("rates"), num_species=2, individuals_per_species=2,
                                  clips_per_individual=4, clip_s=0.5, sample_rate=[16000, 22050], seed=0)


@pytest.fixture(scope="module")
def at_48k(synthetic):
    return AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5, target_rate=48000)


def test_target_rate_is_what_loaders_resample_to(synthetic, at_48k):
    path = at_48k.items[0].path
    assert load_audio(path).sample_rate == 16000  # default: the model's rate
    audio = load_audio(path, target_rate=48000)
    assert audio.sample_rate == 48000 and audio.waveform.shape[-1] == 24000  # 0.5 s at 48 kHz
    assert at_48k.target_rate == 48000 and at_48k[0]["audio"].shape == (24000,)
    assert AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5).target_rate == 16000
    assert [w.audio.shape[-1] for w in stream_windows(path, window_s=0.5, target_rate=32000)] == [16000]
    with pytest.raises(TypeError, match="sample_rate"):  # the old name, which meant the target, is gone
        AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5, sample_rate=48000)


def test_extract_embeddings_refuses_another_rate_and_keeps_the_default(model, synthetic, at_48k):
    with pytest.raises(ValueError, match=f"the dataset {REFUSED}"):
        extract_embeddings(model, at_48k, progress=False)
    default = AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5)
    emb = extract_embeddings(model, default, progress=False)
    assert emb.embeddings.shape == (len(default), model.embedding_dim)


def test_train_probe_refuses_another_rate(model, synthetic, at_48k):
    with pytest.raises(ValueError, match=f"the train dataset {REFUSED}"):  # online: checked before any step
        train_probe(attention_probe(model, at_48k.num_classes), at_48k, epochs=1, progress=False)
    with pytest.raises(ValueError, match=REFUSED):  # offline: the extraction refuses it
        train_probe(linear_probe(model, at_48k.num_classes), at_48k, epochs=1, progress=False)
    default = AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5)
    with pytest.raises(ValueError, match=f"the val dataset {REFUSED}"):
        train_probe(attention_probe(model, default.num_classes), default, at_48k, epochs=1, progress=False)


def test_evaluate_refuses_another_rate(model, at_48k):
    with pytest.raises(ValueError, match=f"the train split {REFUSED}"):
        evaluate(model, at_48k, progress=False)


# Harmless here: the fits stop at their start on purpose, without validation data.
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_lightning_refuses_another_rate(tiny_dir, synthetic, at_48k):
    L = pytest.importorskip("lightning")
    import avex_hub
    from avex_hub.integrations.lightning import AvexClassifier, AvexDataModule

    quiet = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                 num_sanity_val_steps=0, enable_checkpointing=False, limit_val_batches=0)
    module = AvexClassifier(avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir), labels=at_48k.labels)
    with pytest.raises(ValueError, match=f"the data module's train split {REFUSED}"):
        L.Trainer(max_steps=1, **quiet).fit(module, AvexDataModule(train=at_48k, batch_size=4))
    loader = torch.utils.data.DataLoader(at_48k, batch_size=4, collate_fn=at_48k.collate)
    with pytest.raises(ValueError, match=f"the training data {REFUSED}"):
        L.Trainer(max_steps=1, **quiet).fit(module, loader)


def test_sklearn_cannot_feed_another_rate(model, synthetic):
    import dataclasses

    from avex_hub.integrations.sklearn import AvexSklearnEmbedder

    files = [str(item.path) for item in AudioDataset.from_manifest(synthetic.manifest, clip_s=0.5).items[:2]]
    assert AvexSklearnEmbedder(model).fit(files).transform(files).shape == (2, model.embedding_dim)
    other = copy.deepcopy(model)  # its clips (files and arrays) are resampled to 16 kHz: a 32 kHz model is refused
    other.preprocessing = dataclasses.replace(other.preprocessing, sample_rate=32000)
    refused = "the dataset yields 16000 Hz audio but esp_aves2_sl_beats_all takes 32000 Hz; use a model that takes"
    with pytest.raises(ValueError, match=refused):
        AvexSklearnEmbedder(other).fit(files).transform(files)
