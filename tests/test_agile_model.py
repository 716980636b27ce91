"""The model interface (avex_hub.integrations.agile.model): our model behind hoplite's EmbeddingModel, run by
hoplite's own EmbedWorker and compared with our archive.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from agile_support import HOP, WINDOW, archive_path, data  # noqa: E402,F401 - data, archive_path: fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_from_config_builds_the_model_and_places_it_as_the_command_line_does(tiny_dir):
    from ml_collections import config_dict

    adapter = agile.AvexEmbeddingModel.from_config(config_dict.ConfigDict({"checkpoint": str(tiny_dir), "layer": 1}))
    assert adapter.device == "auto" and adapter.settings["layers"] == [1]
    assert adapter._device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pinned = agile.AvexEmbeddingModel.from_config({"checkpoint": str(tiny_dir), "device": "cpu"})
    assert pinned._device == torch.device("cpu")
    out = pinned.embed(np.zeros(32000, np.float32))
    assert out.embeddings.shape[:2] == (1, 1)


def test_audio_the_model_cannot_take_is_refused_as_predict_refuses_it(model):
    """On main `[samples, channels]` was embedded without complaint and 100-sample clips were padded and embedded."""
    adapter = agile.AvexEmbeddingModel.from_model(model, window_size_s=WINDOW, hop_size_s=HOP)
    with pytest.raises(ValueError, match=r"audio_array of shape \(32000, 2\) looks like \[samples, channels\] \(2 "
                                         r"channels of 32000 samples\); hoplite's embed takes \[channels, samples\]: "
                                         r"pass audio_array.T"):
        adapter.embed(np.zeros((32000, 2), np.float32))
    with pytest.raises(ValueError, match=r"audio of 100 samples \(0.006 s at 16000 Hz\) is shorter than the 2800 "
                                         r"samples \(0.175 s\) of one 16-frame patch"):
        adapter.embed(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="audio_array must be"):
        adapter.embed(np.zeros((1, 2, 32000), np.float32))
    assert adapter.embed(np.zeros((2, 32000), np.float32)).embeddings.shape[:2] == (1, 2)
    with pytest.raises(ValueError, match="looks like"):
        adapter.batch_embed(np.zeros((2, 32000, 2), np.float32))
