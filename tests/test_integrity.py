"""Integrity: probes cannot alter a backbone, label maps are verified, malformed files fail before allocation."""

from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import avex_hub
from avex_hub.hub import weights as weights_module
from avex_hub.hub.loading import ChecksumError, build_model, sha256_file
from avex_hub.hub.integrity import git_blob_sha1
from avex_hub.encoder.model import MIN_SAMPLES
from avex_hub.heads.probes import linear_probe, load_probe, mlp_probe, save_probe
from avex_hub.hub.provenance import PROBE_META_KEY
from conftest import populate_hub_cache


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _state_dict_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _identical(model, before) -> bool:
    now = model.state_dict()
    return set(now) == set(before) and all(torch.equal(now[k], before[k]) for k in before)


def _rewrite_probe(path: Path, *, meta=None, state=None) -> Path:
    """Rewrite a saved probe's header metadata (a function of the dict, or raw text) and/or tensors."""
    with safe_open(str(path), "pt") as f:
        text = f.metadata()[PROBE_META_KEY]
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if callable(meta):
        data = json.loads(text)
        meta(data)
        text = json.dumps(data)
    elif isinstance(meta, str):
        text = meta
    if state is not None:
        state(tensors)
    save_file(tensors, str(path), metadata={PROBE_META_KEY: text})
    Path(str(path) + ".json").unlink(missing_ok=True)  # the header alone speaks for the file
    return path


# -- probes cannot alter the backbone ---------------------------------------------------------------------------
def test_frozen_probe_carrying_a_backbone_tensor_is_refused_and_the_model_is_untouched(model, tiny_dir, tmp_path):
    path = save_probe(linear_probe(model, 3), tmp_path / "head.safetensors")
    key = "backbone.backbone.encoder.layers.0.fc1.weight"
    tampered = model.state_dict()["backbone.encoder.layers.0.fc1.weight"] + 1.0
    _rewrite_probe(path, state=lambda t: t.update({key: tampered}))
    before = _state_dict_copy(model)
    with pytest.raises(ValueError, match=f"holds backbone tensors.*{key}.*frozen probe"):
        load_probe(path, model)
    assert _identical(model, before) and model.weights_sha256 == sha256_file(tiny_dir / "model.safetensors")
    with pytest.raises(ValueError, match=key):  # the hub entry point builds a verified backbone: refused too
        avex_hub.entrypoints.load_probe(path, checkpoint=tiny_dir)


def test_probe_kind_and_config_must_agree(model, tmp_path):
    path = save_probe(linear_probe(model, 3), tmp_path / "head.safetensors")

    def claim_fine_tuned(meta):
        meta["provenance"]["kind"] = "fine-tuned probe"

    _rewrite_probe(path, meta=claim_fine_tuned)  # the config still says freeze_backbone: true
    with pytest.raises(ValueError, match="field freeze_backbone=True disagrees with its provenance"):
        load_probe(path, model)


@pytest.mark.parametrize("case", ["int", "bool", "nan", "inf"])
def test_probe_head_of_integer_dtype_or_non_finite_values_is_refused(model, tmp_path, case):
    path = save_probe(linear_probe(model, 3), tmp_path / "head.safetensors")
    weight = load_file(str(path))["head.weight"]
    bad = {"int": weight.to(torch.int32), "bool": weight > 0, "nan": weight.clone().fill_(float("nan")),
           "inf": weight.clone().fill_(float("inf"))}[case]
    _rewrite_probe(path, state=lambda t: t.update({"head.weight": bad}))
    with pytest.raises(ValueError, match=r"head\.weight" + (" \\(I32\\)" if case == "int" else "")):
        load_probe(path, model)


def test_probe_header_with_an_absurd_hidden_dim_fails_before_allocating(model, tmp_path):
    path = save_probe(mlp_probe(model, 3, hidden_dim=16), tmp_path / "mlp.safetensors")
    _rewrite_probe(path, meta=lambda m: m["config"].update(hidden_dim=10**9))  # a 256 GB head if built
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"head\.0\.weight: config gives \(1000000000, 64\), file holds \(16, 64\)"):
        load_probe(path, model)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB: nothing big was allocated


def _set(path, value):
    def edit(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_set(("config", "layers"), [1]), "field layers=\\[1\\] disagrees with its provenance"),
    (_set(("config", "pooling"), "max"), "field pooling='max' disagrees with its provenance"),
    (_set(("config", "num_classes"), "3"), "probe config field num_classes is malformed"),
    (_set(("config", "hidden_dim"), True), "probe config field hidden_dim is malformed"),
    (_set(("config", "freeze_backbone"), "yes"), "probe config field freeze_backbone is malformed"),
    (_set(("config", "dropout"), 2.0), "probe config is malformed: dropout must be in"),
    (_set(("provenance", "layers"), ["three"]), "provenance field layers is malformed"),
    (_set(("provenance", "pooling"), 7), "provenance field pooling is malformed"),
    (_set(("provenance", "kind"), "fine-tuned export"), "provenance kind 'fine-tuned export' is not a probe's"),
    (lambda m: m.pop("config"), "saved without provenance"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_probe_metadata_names_the_file_and_the_field(model, tmp_path, edit, field):
    path = save_probe(linear_probe(model, 3, layers=[3]), tmp_path / "head.safetensors")
    _rewrite_probe(path, meta=edit)
    with pytest.raises(ValueError, match=field) as info:
        load_probe(path, model)
    assert str(path) in str(info.value)


# -- config.json and weights: checked against the file's header before anything is built ----------------------
def _edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"encoder_layers": 10_000}, "encoder_layers=10000 but the weights hold 3 layers"),
    ({"encoder_embed_dim": 10**6}, r"config encoder_embed_dim give .*q_proj.weight the shape \(1000000, 1000000\)"),
    ({"conv_pos": 10**7}, r"conv_pos give encoder.pos_conv.*\(64, 4, 10000000\), the weights hold \(64, 4, 128\)"),
    ({"encoder_ffn_embed_dim": 10**8}, "encoder_ffn_embed_dim, encoder_embed_dim give"),
    ({"num_mel_bins": 10**7}, "num_mel_bins=10000000 is beyond any BEATs model"),
])
def test_absurd_config_sizes_fail_before_allocating(tiny_copy, changes, message):
    _edit_config(tiny_copy, **changes)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    assert time.perf_counter() - start < 2.0  # the old loader spent 9 s and 3.8 GB on encoder_layers=10000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB


@pytest.mark.parametrize("changes, message", [
    ({"encoder_layers": 0}, "encoder_layers must be positive, found 0"),
    ({"embed_dim": -32}, "embed_dim must be positive, found -32"),
    ({"encoder_layers": True}, r"encoder_layers must be an int, found True \(bool\)"),
    ({"conv_pos": 128.0}, r"conv_pos must be an int, found 128.0 \(float\)"),
    ({"encoder_attention_heads": 0}, "encoder_attention_heads must be positive"),
    ({"fbank_std": 0}, "fbank_std must be positive, found 0"),
    ({"dropout": float("nan")}, "dropout must be a finite number"),
    ({"dropout": 2.0}, r"config.json: config field dropout must lie in \[0, 1\), found 2.0"),
    ({"attention_dropout": 1.0}, r"config field attention_dropout must lie in \[0, 1\), found 1.0"),
    ({"activation_dropout": 1.5}, r"config field activation_dropout must lie in \[0, 1\)"),
    ({"dropout_input": 7}, r"config field dropout_input must lie in \[0, 1\), found 7"),
    ({"encoder_layerdrop": 1.0}, r"config field encoder_layerdrop must lie in \[0, 1\), found 1.0"),
    ({"predictor_dropout": 3.0}, r"config field predictor_dropout must lie in \[0, 1\)"),
    ({"encoder_layerdrop": -0.1}, "encoder_layerdrop must not be negative, found -0.1"),
    ({"layer_wise_gradient_decay_ratio": 1.5}, r"layer_wise_gradient_decay_ratio must lie in \[0, 1\], found 1.5"),
    ({"deep_norm": "yes"}, "deep_norm must be true or false"),
    ({"fbank_mean": 0.0}, r"fbank_mean=0.0 would be ignored: the model uses preprocessing.fbank_mean=15.41663"),
    ({"fbank_std": 1.0}, "fbank_std=1.0 would be ignored"),
    ({"sample_frequency": 32000.0}, "sample_frequency=32000.0 would be ignored: .*preprocessing.sample_rate=16000"),
    ({"preprocessing": {"sample_rate": 16000, "fbank_std": 0}}, "fbank_std must be positive"),  # config field first
    ({"preprocessing": {"fbank_mean": 15.41663, "fbank_std": 6.55582, "window_s": 0}},
     "preprocessing.window_s must be positive"),
    ({"preprocessing": {"bogus": 1}}, '"preprocessing" must be an object with fields'),
])
def test_malformed_config_values_are_named(tiny_copy, changes, message):
    _edit_config(tiny_copy, **changes)
    with pytest.raises(ValueError, match=message) as info:
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    assert "config.json" in str(info.value) or "model.safetensors" in str(info.value)


def test_fractions_at_the_ends_of_their_ranges_load(tiny_copy):
    _edit_config(tiny_copy, dropout=0.0, encoder_layerdrop=0.999, layer_wise_gradient_decay_ratio=1.0)
    model = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    assert (model.config.encoder_layerdrop, model.config.layer_wise_gradient_decay_ratio) == (0.999, 1.0)
    _edit_config(tiny_copy, layer_wise_gradient_decay_ratio=0)  # 0: no gradient below the top layer
    assert build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy).config.layer_wise_gradient_decay_ratio == 0


def test_config_json_that_is_not_an_object_or_too_big(tiny_copy):
    (tiny_copy / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object of BEATs config fields, found list"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    (tiny_copy / "config.json").unlink()
    os.symlink("/dev/zero", tiny_copy / "config.json")
    with pytest.raises(ValueError, match="expected a BEATs config.json of at most 1 MiB"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)


@pytest.mark.parametrize("case", ["int", "bool", "nan", "inf"])
def test_weights_of_integer_dtype_or_non_finite_values_are_refused_by_name(tiny_copy, case):
    state = load_file(str(tiny_copy / "model.safetensors"))
    key = "backbone.encoder.layers.1.fc2.weight"
    value = state[key]
    state[key] = {"int": value.to(torch.int64), "bool": value > 0,
                  "nan": value.clone().index_fill_(0, torch.tensor([3]), float("nan")),
                  "inf": value.clone().index_fill_(0, torch.tensor([0]), -float("inf"))}[case]
    save_file(state, str(tiny_copy / "model.safetensors"))
    expected = {"int": "I64", "bool": "BOOL"}.get(case, "NaN or infinite")
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    assert key in str(info.value) and expected in str(info.value)


# -- label maps: verified against the Hub's content address and the pinned digest -------------------------------
def _cache(offline_hub, entry, tiny_dir) -> Path:
    return populate_hub_cache(offline_hub, entry.repo_id, {entry.filename: tiny_dir / "model.safetensors",
                                                           "label_map.json": tiny_dir / "label_map.json"})


def _permute_label_map_blob(snapshot: Path) -> tuple[Path, str, str]:
    """Swap two names inside the cached blob (a permuted label map): (link, address, new git SHA-1)."""
    link = snapshot / "label_map.json"
    blob = Path(os.path.realpath(link))
    labels = json.loads(blob.read_text())
    a, b = list(labels)[:2]
    labels[a], labels[b] = labels[b], labels[a]
    blob.write_text(json.dumps(labels))
    return link, blob.name, git_blob_sha1(blob)


def test_permuted_label_map_in_the_cache_is_refused(offline_hub, tiny_entry, tiny_dir):
    snapshot = _cache(offline_hub, tiny_entry, tiny_dir)
    assert avex_hub.esp_aves2_sl_beats_all(progress=False).labels == avex_hub.label_map().names  # as cached: fine
    link, address, found = _permute_label_map_blob(snapshot)
    assert len(address) == 40 and address != found  # a small file: addressed by its git blob SHA-1
    # (pretrained=False reads no label map: it builds the encoder alone.)
    loads = (avex_hub.esp_aves2_sl_beats_all, avex_hub.label_map, lambda: avex_hub.download_weights(tiny_entry.name))
    for load in loads:
        with pytest.raises(ChecksumError) as info:
            load()
        message = str(info.value)
        assert str(link) in message and f"expected {address}, found {found}" in message
        assert "--force-download" in message


def test_pinned_label_map_digest_is_checked(offline_hub, tiny_entry, tiny_dir, monkeypatch, tmp_path):
    _cache(offline_hub, tiny_entry, tiny_dir)
    digest = sha256_file(tiny_dir / "label_map.json")
    monkeypatch.setitem(weights_module.WEIGHTS, tiny_entry.name, replace(tiny_entry, label_map_sha256=digest))
    assert len(avex_hub.label_map()) == 7
    monkeypatch.setitem(weights_module.WEIGHTS, tiny_entry.name, replace(tiny_entry, label_map_sha256="0" * 64))
    with pytest.raises(ChecksumError, match=f"label_map.json: SHA-256 {digest} is not the pinned {'0' * 64}"):
        avex_hub.label_map()
    # A plain file (a local_dir copy) has no content address: only the pin can vouch for it.
    from avex_hub.hub.loading import verify_label_map

    plain = tmp_path / "label_map.json"
    plain.write_bytes((tiny_dir / "label_map.json").read_bytes())
    assert verify_label_map(plain, replace(tiny_entry, label_map_sha256=digest)) is None
    with pytest.raises(ChecksumError, match="pinned"):
        verify_label_map(plain, replace(tiny_entry, label_map_sha256="0" * 64))


def test_cli_verify_and_info_cover_the_label_map(offline_hub, tiny_entry, tiny_dir, capsys):
    from avex_hub.cli import EXIT_OK, main

    snapshot = _cache(offline_hub, tiny_entry, tiny_dir)
    assert main(["verify", tiny_entry.name]) == EXIT_OK
    out = capsys.readouterr().out
    address = Path(os.path.realpath(snapshot / "label_map.json")).name
    assert f"OK {snapshot / 'label_map.json'} (content address {address})" in out
    link, address, found = _permute_label_map_blob(snapshot)
    assert main(["verify", tiny_entry.name]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH label map" in out and f"expected {address}, found {found}" in out
    assert main(["info", "--json"]) == EXIT_OK
    row = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}[tiny_entry.name]
    assert row["labels"] is None and row["label_map"]["status"] == "refused" and found in row["label_map"]["detail"]
    assert main(["info"]) == EXIT_OK
    assert f"{tiny_entry.name}: label map refused:" in capsys.readouterr().out


def test_info_reads_a_label_map_with_a_size_cap(offline_hub, tiny_entry, tiny_dir, capsys):
    from avex_hub.cli import EXIT_OK, main

    snapshot = _cache(offline_hub, tiny_entry, tiny_dir)
    (snapshot / "label_map.json").unlink()
    os.symlink("/dev/zero", snapshot / "label_map.json")  # read without a cap, this ran to 2.3 GB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    assert main(["info", "--json"]) == EXIT_OK
    row = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}[tiny_entry.name]
    assert time.perf_counter() - start < 10 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000
    assert row["label_map"]["status"] == "refused" and "a label map of at most 32 MiB" in row["label_map"]["detail"]


# -- a padding mask the encoder cannot see through --------------------------------------------------------------
def test_padding_mask_leaving_no_visible_sample_is_refused(tiny_model):
    audio = torch.randn(2, 24_000) * 0.1
    mask = torch.zeros(2, 24_000, dtype=torch.bool)
    mask[1, :-400] = True  # 400 valid samples at the end of the row: the reduction to frames drops them
    with pytest.raises(ValueError, match=r"batch rows \[1\] start with padding .*\(row 1: 400\)"):
        tiny_model(audio, mask)
    # Brute force: MIN_SAMPLES valid samples at the end of a row, or a single one at its start, always give
    # finite logits, whatever the row length (the dropped tail is at most MIN_SAMPLES - 1 samples).
    with torch.inference_mode():
        for length in (MIN_SAMPLES, 24_000, 66_799, 160_000):
            for mask in (torch.arange(length) < length - MIN_SAMPLES, torch.arange(length) >= 1):
                logits = tiny_model(torch.randn(1, length) * 0.1, mask[None])
                assert torch.isfinite(logits).all(), (length, int((~mask).sum()))
