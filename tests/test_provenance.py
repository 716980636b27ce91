"""Saved probes and fine-tuned exports carry their provenance; loading onto another backbone or contract fails."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import torch
from safetensors.torch import load_file, save_file

import avex_hub
from avex_hub.hub.loading import sha256_file
from avex_hub.encoder.model import AvexModel
from avex_hub.heads.probes import linear_probe, load_probe, mlp_probe, save_probe
from avex_hub.hub.provenance import (Provenance, ProvenanceMismatchError, ProvenanceWarning, architecture,
                                 check_export_provenance, config_digest, metrics_dict, provenance_for_export)
from conftest import REPO_ROOT

NAMES = ["Turdus merula", "Parus major", "Erithacus rubecula"]


def _build(checkpoint, name="esp_aves2_sl_beats_all"):
    return avex_hub.build_model(name, checkpoint=checkpoint)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return _build(tiny_dir)  # our own: probes freeze it in place


@pytest.fixture(scope="module")
def clips():
    """Three classes of tones in noise, 8 clips each: 0.5 s at 16 kHz -> audio [24, 8000], labels [24]."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    audio, labels = [], []
    for label, hz in enumerate([500.0, 2000.0, 5000.0]):
        for _ in range(8):
            phase = float(torch.rand((), generator=g)) * 6.28
            audio.append(0.3 * torch.sin(2 * math.pi * hz * t + phase) + 0.05 * torch.randn(8000, generator=g))
            labels.append(label)
    return torch.stack(audio), torch.tensor(labels)


@pytest.fixture(scope="module")
def trained(model, clips, tmp_path_factory):
    """A trained MLP probe on all layers, saved with its TrainResult: (probe, path, result)."""
    from avex_hub.embed.extract import Embeddings
    from avex_hub.heads.training import train_probe

    probe = mlp_probe(model, 3, layers="all", hidden_dim=16, label_names=NAMES)
    with torch.no_grad():
        emb = probe.embed(clips[0])
    data = Embeddings.from_arrays(emb, clips[1], layers=probe.layer_indices, pooling="mean", label_names=NAMES)
    result = train_probe(probe, data, epochs=15, progress=False, seed=0)
    path = save_probe(probe, tmp_path_factory.mktemp("probe") / "birds.safetensors", metrics=result)
    return probe, path, result


def _outputs(probe, clips):
    with torch.no_grad():
        return probe(clips[0][:6])


def _perturbed_copy(tiny_copy):
    """The tiny checkpoint with one tensor changed: same architecture, other weights digest."""
    weights = tiny_copy / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in sorted(state) if k.endswith("fc1.weight"))
    state[key] = state[key] + 0.01
    save_file(state, str(weights))
    return tiny_copy


def test_same_backbone_reloads_identical_outputs_and_records_everything(trained, model, clips, tiny_dir):
    probe, path, result = trained
    loaded = load_probe(path, _build(tiny_dir))
    assert torch.equal(_outputs(loaded, clips), _outputs(probe, clips))
    prov = loaded.provenance
    assert prov.backbone_name == "esp_aves2_sl_beats_all" and prov.kind == "probe"
    assert prov.backbone_sha256 == sha256_file(tiny_dir / "model.safetensors") == model.weights_sha256
    assert prov.backbone_config == architecture(model.config) and "dropout" not in prov.backbone_config
    assert prov.backbone_config["encoder_layers"] == 3 and prov.backbone_config["encoder_embed_dim"] == 64
    assert prov.backbone_config_sha256 == config_digest(model.config)
    assert prov.preprocessing == model.preprocessing.to_dict()
    assert prov.preprocessing["sample_rate"] == 16000 and prov.preprocessing["clip_input"] is False
    assert prov.layers == (0, 1, 2, 3) and prov.pooling == "mean"
    assert prov.label_names == tuple(NAMES) and loaded.label_names == NAMES
    assert prov.metrics["metric"] == "accuracy" and prov.metrics["value"] == result.best_metric
    assert prov.metrics["best_epoch"] == result.best_epoch and prov.metrics["epochs"] == len(result.history)
    assert prov.metrics["split"] == "val" and prov.metrics["loss"] == result.history[result.best_epoch - 1]["val_loss"]
    assert prov.avex_hub_version == avex_hub.__version__
    created = datetime.fromisoformat(prov.created)
    assert created.tzinfo is not None and abs((datetime.now(timezone.utc) - created).total_seconds()) < 3600
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert Provenance.from_dict(sidecar["provenance"]) == prov == Provenance.from_dict(prov.to_dict())


def test_other_weights_fail_naming_both_digests(trained, tiny_copy):
    _, path, _ = trained
    other = _build(_perturbed_copy(tiny_copy))
    with pytest.raises(ProvenanceMismatchError) as info:
        load_probe(path, other)
    message = str(info.value)
    assert trained[0].backbone.weights_sha256 in message and other.weights_sha256 in message
    assert other.weights_sha256 != trained[0].backbone.weights_sha256
    assert len(info.value.differences) == 1 and info.value.differences[0].startswith("weights:")
    assert "checkpoint=" in message and "allow_backbone_mismatch=True" in message  # what to do
    assert isinstance(info.value, ValueError)


def test_other_preprocessing_fails_naming_the_field(trained, tiny_dir):
    _, path, _ = trained
    clipping = _build(tiny_dir, "esp_aves2_naturelm_audio_v1_beats")  # same weights file, clips its input
    assert clipping.weights_sha256 == trained[0].backbone.weights_sha256
    with pytest.raises(ProvenanceMismatchError) as info:
        load_probe(path, clipping)
    assert info.value.differences == ["preprocessing.clip_input: head False, backbone True"]


def test_other_architecture_fails_even_with_the_same_weights_file(trained, tiny_copy):
    _, path, _ = trained
    config = json.loads((tiny_copy / "config.json").read_text())
    config["max_distance"] = 400  # relative-position buckets: no tensor changes shape, the outputs do
    (tiny_copy / "config.json").write_text(json.dumps(config))
    other = _build(tiny_copy)
    assert other.weights_sha256 == trained[0].backbone.weights_sha256
    with pytest.raises(ProvenanceMismatchError) as info:
        load_probe(path, other)
    assert info.value.differences == ["config.max_distance: head 800, backbone 400"]


def test_training_only_config_fields_do_not_count(model):
    prov = Provenance.from_model(model, layers=[3], pooling="mean")
    changed = AvexModel(replace(model.config, dropout=0.3, encoder_layerdrop=0.2), label_map=model.label_map,
                        preprocessing=model.preprocessing, name=model.name, weights_sha256=model.weights_sha256)
    assert prov.differences(changed) == []
    deeper = replace(model.config, encoder_layers=2)
    smaller = AvexModel(deeper, label_map=model.label_map, name=model.name, weights_sha256=model.weights_sha256)
    diffs = prov.differences(smaller)
    assert "config.encoder_layers: head 3, backbone 2" in diffs
    assert any(d.startswith("layers: the head reads hidden states [3]") for d in diffs)


def test_layers_and_pooling_are_part_of_the_contract(model):
    prov = Provenance.from_model(model, layers=[1, 3], pooling="mean")
    prov.check_compatible(model, layers=[1, -1], pooling="mean")  # -1 is layer 3 here
    with pytest.raises(ProvenanceMismatchError) as info:
        prov.check_compatible(model, layers="last", pooling="max")
    assert info.value.differences == ["layers: the head was trained on hidden states [1, 3], given [3]",
                                      "pooling: the head was trained on 'mean' pooling, given 'max'"]
    with pytest.raises(ValueError, match=r"indices 0\.\.3"):
        Provenance.from_model(model, layers=[4], pooling="mean")


def test_escape_hatch_warns_and_loads(trained, tiny_copy, clips):
    probe, path, _ = trained
    other = _build(_perturbed_copy(tiny_copy))
    with pytest.warns(ProvenanceWarning, match="allow_backbone_mismatch=True") as record:
        loaded = load_probe(path, other, allow_backbone_mismatch=True)
    assert other.weights_sha256 in str(record[0].message)
    assert torch.equal(loaded.head[0].weight, probe.head[0].weight)
    assert not torch.allclose(_outputs(loaded, clips), _outputs(probe, clips))  # why it is refused by default


def test_fresh_weights_are_never_silently_matched(model, clips, tmp_path):
    fresh = AvexModel(model.config, label_map=model.label_map, preprocessing=model.preprocessing, name=model.name)
    fresh.load_state_dict(model.state_dict())  # the very same numbers, but nothing proves it: no digest
    probe = linear_probe(fresh, 3, label_names=NAMES)
    path = save_probe(probe, tmp_path / "fresh.safetensors")
    assert load_probe(path).provenance.backbone_sha256 is None
    for backbone in (model, fresh):
        with pytest.raises(ProvenanceMismatchError, match="no weights digest"):
            load_probe(path, backbone)
    with pytest.warns(ProvenanceWarning):
        loaded = load_probe(path, fresh, allow_backbone_mismatch=True)
    assert torch.equal(_outputs(loaded, clips), _outputs(probe, clips))
    published = save_probe(linear_probe(model, 3), tmp_path / "verified.safetensors")
    with pytest.raises(ProvenanceMismatchError, match=r"has sha256 none \(fresh"):
        load_probe(published, fresh)


def test_hub_entry_point_loads_a_matching_probe_in_one_call(trained, tiny_dir, tiny_copy, clips):
    probe, path, _ = trained
    loaded = torch.hub.load(str(REPO_ROOT), "load_probe", str(path), source="local", checkpoint=str(tiny_dir))
    assert torch.equal(_outputs(loaded, clips), _outputs(probe, clips))
    assert loaded.backbone.weights_sha256 == probe.backbone.weights_sha256 and not loaded.training
    given = torch.hub.load(str(REPO_ROOT), "load_probe", str(path), source="local", backbone=probe.backbone)
    assert given.backbone is probe.backbone
    with pytest.raises(ValueError, match=f"local esp_aves2_sl_beats_all weights.*{probe.backbone.weights_sha256}"):
        avex_hub.entrypoints.load_probe(path)  # not the published weights: nothing to download
    with pytest.raises(ProvenanceMismatchError, match="weights:"):
        avex_hub.entrypoints.load_probe(path, checkpoint=_perturbed_copy(tiny_copy))
    head = avex_hub.entrypoints.load_probe(path, embeddings_only=True)
    assert head.backbone is None and head.provenance.label_names == tuple(NAMES)


def test_published_provenance_says_how_to_load(trained):
    prov = load_probe(trained[1]).provenance
    assert not prov.published and "checkpoint=" in prov.how_to_load()
    published = replace(prov, backbone_sha256=avex_hub.get_weights("esp_aves2_sl_beats_all").sha256)
    assert published.published and "avex_hub.esp_aves2_sl_beats_all()" in published.how_to_load()


def test_header_is_authoritative_and_sidecar_must_agree(trained, tmp_path, clips):
    probe, path, _ = trained
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    assert torch.equal(_outputs(load_probe(copy, probe.backbone), clips), _outputs(probe, clips))  # no sidecar
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    sidecar["provenance"]["label_names"] = list(reversed(NAMES))
    (tmp_path / "copy.safetensors.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="disagrees"):
        load_probe(copy, probe.backbone)


def test_metrics_and_label_names_given_at_saving(model, tmp_path):
    probe = linear_probe(model, 3)
    path = save_probe(probe, tmp_path / "p.safetensors", metrics={"val_macro_f1": 0.75}, label_names=NAMES)
    prov = load_probe(path).provenance
    assert prov.metrics == {"val_macro_f1": 0.75} and prov.label_names == tuple(NAMES)
    head = load_probe(path)  # a head without backbone keeps its provenance when saved again
    again = save_probe(head, tmp_path / "again.safetensors", metrics={"test_accuracy": 0.5})
    kept = load_probe(again, model).provenance
    assert kept.backbone_sha256 == model.weights_sha256 and kept.metrics == {"test_accuracy": 0.5}
    assert metrics_dict({"val_acc": torch.tensor(0.5)}) == {"val_acc": 0.5}  # Lightning's callback_metrics
    with pytest.raises(TypeError, match="JSON-serialisable"):
        metrics_dict({"curve": object()})
    with pytest.raises(ValueError, match="label_names has 2 names"):
        save_probe(probe, tmp_path / "bad.safetensors", label_names=NAMES[:2])
    from avex_hub.heads.probes import Probe

    with pytest.raises(ValueError, match="backbone="):
        save_probe(Probe(None, 3, layers=[3], embedding_dim=64), tmp_path / "x.safetensors")


def test_fine_tuned_probe_carries_its_backbone(tiny_dir, clips, tmp_path):
    base = _build(tiny_dir)
    probe = linear_probe(base, 3, freeze_backbone=False)
    with torch.no_grad():
        base.backbone.encoder.layers[-1].fc1.weight.add_(0.01)  # stands for fine-tuning
    path = save_probe(probe, tmp_path / "ft.safetensors")
    target = _build(tiny_dir)  # the base weights: what it was fine-tuned from
    before = {k: v.clone() for k, v in target.state_dict().items()}
    loaded = load_probe(path, target)
    assert loaded.provenance.kind == "fine-tuned probe"
    assert torch.equal(_outputs(loaded, clips), _outputs(probe, clips))
    # The fine-tuned weights went into a copy, which records the probe file's digest; the caller's model is as given.
    assert loaded.backbone is not target and loaded.backbone.weights_sha256 == sha256_file(path)
    assert target.weights_sha256 == sha256_file(tiny_dir / "model.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    with pytest.raises(ValueError, match="fine-tuned its backbone"):
        load_probe(path)  # a head without its fine-tuned backbone would be fed the wrong embeddings
    frozen = save_probe(linear_probe(_build(tiny_dir), 3), tmp_path / "frozen.safetensors")
    load_probe(frozen, target)  # the base model is still the base
    with pytest.raises(ProvenanceMismatchError, match="weights:"):
        load_probe(frozen, loaded.backbone)  # the copy holds the fine-tuned weights


def test_export_provenance_round_trip_and_checks(tiny_copy):
    model = _build(tiny_copy)
    block = provenance_for_export(model, metrics={"val_mAP": 0.4})
    assert block["kind"] == "fine-tuned export" and block["layers"] == [3]
    assert block["label_names"] == list(model.labels)
    config = json.loads((tiny_copy / "config.json").read_text())
    (tiny_copy / "config.json").write_text(json.dumps({**config, "avex_hub": block}))
    loaded = _build(tiny_copy)  # hub.build_model accepts (and today ignores) the block
    prov = check_export_provenance(loaded, block)
    assert prov.metrics == {"val_mAP": 0.4} and prov.backbone_sha256 == model.weights_sha256
    labels = json.loads((tiny_copy / "label_map.json").read_text())
    a, b = list(labels)[:2]
    labels[a], labels[b] = labels[b], labels[a]
    (tiny_copy / "label_map.json").write_text(json.dumps(labels))
    (tiny_copy / "config.json").write_text(json.dumps({**config, "max_distance": 400, "avex_hub": block}))
    with pytest.raises(ProvenanceMismatchError) as info:
        check_export_provenance(_build(tiny_copy), block)
    assert info.value.differences[0] == "config.max_distance: head 800, backbone 400"
    assert re.fullmatch(r"label map: .*first difference at index 0", info.value.differences[1])
    assert check_export_provenance(model, {"base_model": model.name}) is None  # an export from before provenance
