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


class _Counted(ClipList):
    """Clips that count the items read, to show what happened before a failure."""

    reads = 0

    def __getitem__(self, index):
        _Counted.reads += 1
        return super().__getitem__(index)


def _damage_by_truncating(cache):
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) - 40])


def _damage_the_metadata(cache):
    data = cache.read_bytes()
    size = int.from_bytes(data[:8], "little")
    # The JSON of our metadata, inside the file's header, loses its ':' (the same length: the header stays valid).
    header = data[8:8 + size].replace(b'\\"format\\":', b'\\"format\\" ', 1)
    cache.write_bytes(size.to_bytes(8, "little") + header + data[8 + size:])


def _damage_by_dropping_rows(cache):
    Embeddings.load(cache).subset([0, 1]).save(cache)  # the same settings, fewer rows than the dataset


@pytest.mark.parametrize("damage, why", [(_damage_by_truncating, "is damaged: Error while deserializing header"),
                                         (_damage_the_metadata, "is damaged: Expecting"),
                                         (_damage_by_dropping_rows, "it holds 2 rows but the dataset has 5")])
def test_a_damaged_cache_is_recomputed_with_a_line_naming_it(model, tmp_path, damage, why):
    # Issue 27: a damaged cache stopped every later run with a raw error naming no file, until deleted by hand;
    # one with fewer rows than its dataset was taken as valid.
    audio = [torch.randn(4000 + 400 * i) * 0.1 for i in range(5)]
    cache = tmp_path / "clips.safetensors"
    first = extract_embeddings(model, ClipList(audio, labels=[0, 1, 0, 1, 0]), cache=cache, progress=False)
    damage(cache)
    with pytest.warns(UserWarning, match=rf"recomputing the embedding cache {cache}: it cannot be used \(.*{why}"):
        again = extract_embeddings(model, ClipList(audio, labels=[0, 1, 0, 1, 0]), cache=cache, progress=False)
    assert not again.from_cache and torch.allclose(again.embeddings, first.embeddings, atol=1e-6)
    reloaded = extract_embeddings(model, ClipList(audio, labels=[0, 1, 0, 1, 0]), cache=cache, progress=False)
    assert reloaded.from_cache and torch.equal(reloaded.embeddings, again.embeddings)  # repaired on disk


def test_a_junk_partial_is_discarded_with_a_line_naming_it(model, tmp_path):
    audio = [torch.randn(4000) * 0.1 for _ in range(3)]
    cache = tmp_path / "clips.safetensors"
    (tmp_path / "clips.safetensors.partial").write_bytes(b"not an embeddings file at all")
    with pytest.warns(UserWarning, match=r"recomputing the embedding cache .*clips.safetensors.partial: it cannot be "
                                         r"used \(.* is damaged"):
        emb = extract_embeddings(model, audio, cache=cache, progress=False)
    assert len(emb) == 3 and Embeddings.load(cache).embeddings.shape == emb.embeddings.shape
    assert not (tmp_path / "clips.safetensors.partial").exists()


def test_an_unwritable_cache_path_fails_before_any_work(model, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    _Counted.reads = 0
    with pytest.raises(OSError, match=r"cannot write the embedding cache .*a_file/clips.safetensors"):
        extract_embeddings(model, _Counted([torch.randn(4000) * 0.1] * 3),
                           cache=tmp_path / "a_file" / "clips.safetensors", progress=False)
    assert _Counted.reads == 0


def test_labels_of_from_arrays_are_names_or_whole_ids():
    import numpy as np

    x = torch.randn(4, 3)
    named = Embeddings.from_arrays(x, ["owl", "wren", "owl", "kite"])
    assert named.label_names == ["kite", "owl", "wren"] and named.labels.tolist() == [1, 2, 1, 0]
    ordered = Embeddings.from_arrays(x, ["owl", "wren", "owl", "wren"], label_names=["wren", "owl"])
    assert ordered.labels.tolist() == [1, 0, 1, 0]
    assert Embeddings.from_arrays(x, np.array([0.0, 2.0, 1.0, 1.0])).labels.tolist() == [0, 2, 1, 1]
    with pytest.raises(ValueError, match=r"class ids must be whole numbers >= 0; rows \[1, 3\] hold \[0.5, 2.7\]"):
        Embeddings.from_arrays(x, [0, 0.5, 1, 2.7])  # was silently truncated to 0 and 2
    with pytest.raises(ValueError, match=r"labels \['jay'\] are not in label_names \['wren', 'owl'\]"):
        Embeddings.from_arrays(x, ["owl", "jay", "owl", "wren"], label_names=["wren", "owl"])
    with pytest.raises(ValueError, match=r"multi-hot labels must be 0 or 1 \(nan: unknown\); rows \[2\]"):
        Embeddings.from_arrays(x, [[0, 1], [1, 0], [0.5, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"class ids 0..3 do not index the 2 label_names"):
        Embeddings.from_arrays(x, [0, 1, 3, 1], label_names=["a", "b"])


def test_numpy_integers_are_layer_indices(model):
    import numpy as np

    from avex_hub.heads.probes import linear_probe

    clips = [torch.randn(4000) * 0.1, torch.randn(6000) * 0.1]
    plain = extract_embeddings(model, clips, layers=2, progress=False)
    numpy = extract_embeddings(model, clips, layers=np.int64(2), progress=False)
    assert numpy.layers == [2] and numpy.embeddings.shape == plain.embeddings.shape == (2, model.embedding_dim)
    assert torch.equal(numpy.embeddings, plain.embeddings)
    listed = extract_embeddings(model, clips, layers=[np.int64(1), np.int32(-1)], progress=False)
    assert listed.layers == [1, model.num_layers] and all(type(i) is int for i in listed.layers)
    assert linear_probe(model, 3, layers=np.int64(2)).layer_indices == [2]
