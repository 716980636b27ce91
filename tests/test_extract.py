"""Offline extraction (avex_hub.embed.extract): what a cache holds, and a resumed run against one uninterrupted."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from avex_hub.embed.extract import ClipList, Embeddings, extract_embeddings


def test_save_and_load_keep_every_field(tmp_path):
    emb = Embeddings.from_arrays(torch.randn(3, 2, 5), [0, 2, 1], layers=[4, -1], pooling="max",
                                 label_names=["a", "b", "c"], paths=["x.wav", "y.wav", "z.wav"], model_name="m",
                                 model_digest="d" * 64, audio_seconds=7.5, elapsed_s=0.5, settings={"k": [1]})
    loaded = Embeddings.load(emb.save(tmp_path / "e.safetensors"))
    for f in dataclasses.fields(Embeddings):
        if f.name not in ("embeddings", "labels", "from_cache"):
            assert getattr(loaded, f.name) == getattr(emb, f.name), f.name
    assert torch.equal(loaded.embeddings, emb.embeddings) and torch.equal(loaded.labels, emb.labels)
    assert loaded.from_cache and not emb.from_cache
    part = loaded.subset([2, 0])
    assert part.paths == ["z.wav", "x.wav"] and part.labels.tolist() == [1, 0] and part.layers == [4, -1]
    assert (part.pooling, part.label_names, part.model_digest, part.settings) == ("max", ["a", "b", "c"], "d" * 64,
                                                                                    {"k": [1]})


class _Flaky(ClipList):
    """Clips with labels that fail at item 5 while ``fail`` is set, like a run killed half-way."""

    fail = True

    def __getitem__(self, index):
        if index == 5 and _Flaky.fail:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def test_a_resumed_run_adds_up_to_one_uninterrupted_run(model, tmp_path):
    audio = [torch.randn(4000 + 800 * i) * 0.1 for i in range(8)]  # 0.25 s, 0.3 s, ... 0.6 s
    labels = [i % 3 for i in range(8)]
    cache = tmp_path / "clips.safetensors"
    with pytest.raises(KeyboardInterrupt):  # checkpoint_s=0: the partial is written after every batch
        extract_embeddings(model, _Flaky(audio, labels=labels), layers=[1, -1], batch_size=2, cache=cache,
                           checkpoint_s=0.0, progress=False)
    partial = json.loads((tmp_path / "clips.safetensors.partial.json").read_text())
    assert partial["shape"] == [4, 2, model.embedding_dim] and partial["labels"] == labels[:4]
    assert partial["paths"] == [None] * 4 and partial["audio_seconds"] == pytest.approx(sum(len(a) for a in audio[:4])
                                                                                         / 16000)
    _Flaky.fail = False
    resumed = extract_embeddings(model, _Flaky(audio, labels=labels), layers=[1, -1], batch_size=2, cache=cache,
                                 checkpoint_s=0.0, progress=False)
    whole = extract_embeddings(model, ClipList(audio, labels=labels), layers=[1, -1], batch_size=2, progress=False)
    assert not (tmp_path / "clips.safetensors.partial").exists() and cache.is_file()
    assert torch.allclose(resumed.embeddings, whole.embeddings, atol=1e-6)
    assert resumed.labels.tolist() == whole.labels.tolist() == labels
    assert resumed.audio_seconds == pytest.approx(whole.audio_seconds) == pytest.approx(sum(map(len, audio)) / 16000)
    assert resumed.paths is None and resumed.layers == [1, model.num_layers] and resumed.embeddings.dim() == 3
    assert resumed.settings["model_digest"] == whole.model_digest and "dataset" not in whole.settings
    loaded = extract_embeddings(model, _Flaky(audio, labels=labels), layers=[1, -1], batch_size=2, cache=cache,
                                progress=False)
    assert loaded.from_cache and torch.equal(loaded.embeddings, resumed.embeddings)
    assert loaded.settings == resumed.settings and loaded.audio_seconds == resumed.audio_seconds


def test_one_layer_gives_rows_of_one_vector(model):
    clips = [torch.randn(4000) * 0.1, torch.randn(6000) * 0.1]
    last = extract_embeddings(model, clips, progress=False)
    assert last.embeddings.shape == (2, model.embedding_dim) and last.layers == [model.num_layers]
    assert last.labels is None and last.label_names is None and last.settings["stacked"] is False
    one = extract_embeddings(model, clips, layers=[-1], progress=False)
    assert one.embeddings.shape == (2, 1, model.embedding_dim) and torch.allclose(one.embeddings[:, 0],
                                                                                   last.embeddings, atol=1e-6)
