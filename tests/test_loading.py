"""Loading weights: accepted key layouts, refused ones, digests, the Hub cache and offline errors."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

import avex_hub
from avex_hub.hub import weights as weights_module
from avex_hub.encoder.fbank import KaldiFbank
from avex_hub.hub.loading import ChecksumError, WeightsNotAvailableError, build_model, normalize_state_dict, sha256_file
from conftest import populate_hub_cache
from published_digests import OURS, TENSOR_SHA256, model_tensor_digests, tensor_sha256

TOL = 1e-4


def _state(tiny_dir):
    return load_file(str(tiny_dir / "model.safetensors"))


def _write(folder, state):
    save_file(state, str(folder / "model.safetensors"))
    return folder


def _assert_parity(model, cases):
    with torch.inference_mode():
        assert (model(cases["padded.audio"], cases["padded.padding_mask"]) - cases["padded.logits"]).abs().max() <= TOL


def _variants(state):
    fbank = dict(KaldiFbank().named_buffers())
    weight_norm = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        weight_norm[k] = v
    return {
        "module_prefix": {"module." + k: v for k, v in state.items()},
        "model_prefix": {"model." + k: v for k, v in state.items()},
        "ddp_of_lightning": {"module.model." + k: v for k, v in state.items()},
        "weight_g_v": weight_norm,
        "fbank_buffers": {**state, "backbone.fbank.window": fbank["window"], "fbank.mel_weights": fbank["mel_weights"]},
    }


@pytest.mark.parametrize("variant", ["module_prefix", "model_prefix", "ddp_of_lightning", "weight_g_v", "fbank_buffers"])
def test_accepted_key_layouts_load_with_parity(variant, tiny_copy, tiny_dir, cases):
    _write(tiny_copy, _variants(_state(tiny_dir))[variant])
    _assert_parity(build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy), cases)


def test_normalize_is_idempotent_and_maps_to_published_layout(tiny_dir):
    state = _state(tiny_dir)
    for variant in _variants(state).values():
        normalized = normalize_state_dict(variant)
        assert set(normalized) == set(state)
        assert normalize_state_dict(normalized).keys() == normalized.keys()


# -- the layout avex 1.4.0 writes ---------------------------------------------------------------------
# avex's BEATs wrapper holds ``backbone`` (its BEATs, whose ``_BatchedFbank`` registers the persistent buffers
# ``window`` [400] and ``mel_fb`` [257, mels]; the AudioSet ``predictor`` exists when ``finetuned_model``) and
# ``classifier`` (absent with no classes). Per layer, its ``_MultiheadAttention`` (with ``gru_rel_pos``) and
# ``_TransformerSentenceEncoderLayer`` names; the shared relative table is listed under every layer, as torch's
# state_dict() does for a module registered in several places. The key list is written out from reading avex's
# code (models/beats/beats.py, backbone.py, models/beats_model.py), not derived from our model; it equals, in order,
# state_dict() of avex 1.4.0's classes built with the fixture's config.json (checked once outside this repo).
_AVEX_ATTENTION_KEYS = (
    *(f"self_attn.{p}.{w}" for p in ("k_proj", "v_proj", "q_proj", "out_proj") for w in ("weight", "bias")),
    "self_attn.grep_linear.weight", "self_attn.grep_linear.bias",
)
_AVEX_LAYER_TAIL = ("self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "fc1.weight", "fc1.bias",
                    "fc2.weight", "fc2.bias", "final_layer_norm.weight", "final_layer_norm.bias")
_TABLE = "self_attn.relative_attention_bias.weight"


def _avex_layer_keys(i: int) -> tuple[str, ...]:
    # layer 0 builds the table in __init__; layers 1.. get layer 0's assigned afterwards, so it comes later
    if i == 0:
        return ("self_attn.grep_a", _TABLE, *_AVEX_ATTENTION_KEYS, *_AVEX_LAYER_TAIL)
    return ("self_attn.grep_a", *_AVEX_ATTENTION_KEYS, _TABLE, *_AVEX_LAYER_TAIL)


def _avex_state_dict_keys(num_layers: int, *, classifier: bool = True) -> list[str]:
    """``state_dict()`` keys of avex 1.4.0's BEATs model (``avex.models.beats_model.Model``), in its order."""
    backbone = [
        "post_extract_proj.weight", "post_extract_proj.bias", "fbank.window", "fbank.mel_fb", "patch_embedding.weight",
        "encoder.pos_conv.0.bias", "encoder.pos_conv.0.parametrizations.weight.original0",
        "encoder.pos_conv.0.parametrizations.weight.original1",
        *(f"encoder.layers.{i}.{k}" for i in range(num_layers) for k in _avex_layer_keys(i)),
        "encoder.layer_norm.weight", "encoder.layer_norm.bias", "layer_norm.weight", "layer_norm.bias",
        "predictor.weight", "predictor.bias",
    ]
    return ["backbone." + k for k in backbone] + (["classifier.weight", "classifier.bias"] if classifier else [])


def _avex_filterbank() -> dict[str, torch.Tensor]:
    """avex's buffers: our values in its orientation (mel_fb is [257, mels], frequency x mel, like our mel_weights),
    plus float32-level differences of the size avex's own construction shows against ours (up to 2.2e-5)."""
    ours = dict(KaldiFbank().named_buffers())
    wobble = 2e-5 * torch.sin(torch.arange(ours["mel_weights"].numel(), dtype=torch.float32)).view_as(ours["mel_weights"])
    return {"fbank.window": ours["window"] + 1e-7, "fbank.mel_fb": ours["mel_weights"] + wobble}


def _avex_layout(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The fixture's weights under exactly avex 1.4.0's state_dict() keys (behind ``prefix``)."""
    buffers = _avex_filterbank()
    out = {prefix + k: (buffers[k[len("backbone."):]] if k.startswith("backbone.fbank.") else state[k])
           for k in _avex_state_dict_keys(3)}
    assert len(out) == len(state) + 2
    return out


@pytest.mark.parametrize("prefix", ["", "module.", "model.", "module.model."])
def test_avex_1_4_state_dict_layout_loads_with_parity(prefix, tiny_copy, tiny_dir, cases):
    state = _avex_layout(_state(tiny_dir), prefix)
    assert list(state) == [prefix + k for k in _avex_state_dict_keys(3)]
    _write(tiny_copy, state)
    model = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    _assert_parity(model, cases)
    with torch.inference_mode():
        features = model.encode(cases["equal.audio"]).features
    assert (features - cases["equal.features"]).abs().max() <= TOL


def test_avex_encoder_only_layout_without_backbone_prefix(tiny_dir):
    """avex's bare BEATs state dict (no wrapper, so no ``backbone.`` and no classifier) normalises too."""
    published = {k: v for k, v in _state(tiny_dir).items() if not k.startswith("classifier.")}
    bare = {k[len("backbone."):]: v for k, v in _avex_layout(_state(tiny_dir)).items() if k.startswith("backbone.")}
    assert "fbank.mel_fb" in bare and "patch_embedding.weight" in bare
    assert set(normalize_state_dict(bare)) == set(published)


@pytest.mark.parametrize("key, bad", [
    ("backbone.fbank.mel_fb", lambda t: t * 1.01),  # another filterbank (values)
    ("backbone.fbank.mel_fb", lambda t: t.T.contiguous()),  # the other orientation
    ("backbone.fbank.window", lambda t: torch.hann_window(400)),  # a plain Hann window, not povey
])
def test_avex_filterbank_buffer_that_differs_is_refused_by_name(key, bad, tiny_copy, tiny_dir):
    state = _avex_layout(_state(tiny_dir), "module.")
    state["module." + key] = bad(state["module." + key])
    message = _error(tiny_copy, state)
    assert repr(key) in message and "differs" in message


def test_checkpoint_as_single_file(tiny_dir, cases):
    model = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir / "model.safetensors")
    _assert_parity(model, cases)
    assert model.label_map.name(0) == "Streptopelia turtur"
    assert model.weights_sha256 == sha256_file(tiny_dir / "model.safetensors")


def _error(tiny_copy, state, exc=ValueError):
    _write(tiny_copy, state)
    with pytest.raises(exc) as info:
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    return str(info.value)


def test_unexpected_key_is_listed(tiny_copy, tiny_dir):
    message = _error(tiny_copy, {**_state(tiny_dir), "backbone.extra.weight": torch.zeros(1)})
    assert "unexpected keys (1): ['backbone.extra.weight']" in message


def test_missing_key_is_listed(tiny_copy, tiny_dir):
    state = _state(tiny_dir)
    del state["backbone.encoder.layers.1.fc1.bias"]
    assert "missing keys (1): ['backbone.encoder.layers.1.fc1.bias']" in _error(tiny_copy, state)


def test_wrong_filterbank_buffer_refused(tiny_copy, tiny_dir):
    message = _error(tiny_copy, {**_state(tiny_dir), "fbank.window": torch.ones(400)})
    assert "fbank.window" in message and "differs" in message


def test_classifier_width_must_match_label_map(tiny_copy):
    (tiny_copy / "label_map.json").write_text(json.dumps({"A": 0, "B": 1}))
    with pytest.raises(ValueError, match="classifier has 7 outputs but the label map has 2 labels"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)


def test_shared_position_table_must_agree(tiny_copy, tiny_dir):
    state = _state(tiny_dir)
    key = "backbone.encoder.layers.2.self_attn.relative_attention_bias.weight"
    state[key] = state[key] + 1
    assert "differs from layer 0" in _error(tiny_copy, state)


def test_wrong_size_without_config_is_explained(tiny_copy):
    (tiny_copy / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)


def test_pickle_files_are_refused(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="only .safetensors"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tmp_path / "model.pt")


def test_missing_checkpoint_and_label_map(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tmp_path / "nope.safetensors")
    (tmp_path / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_bytes((tiny_dir / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="label_map.json"):
        build_model("esp_aves2_sl_beats_all", checkpoint=tmp_path)


def test_encoder_only_checkpoint(tiny_copy, tiny_dir, cases):
    state = {k: v for k, v in _state(tiny_dir).items() if not k.startswith("classifier.")}
    _write(tiny_copy, state)
    (tiny_copy / "label_map.json").unlink()
    model = build_model("esp_aves2_naturelm_audio_v1_beats", checkpoint=tiny_copy)
    assert model.classifier is None and model.labels == ()
    with torch.inference_mode():
        features = model(cases["equal.audio"])  # inside [-1, 1]: clamping changes nothing
    assert (features - cases["equal.features"]).abs().max() <= TOL
    with pytest.raises(ValueError, match="no species head"):
        model.predict(cases["equal.audio"][0].numpy(), 16000)


def test_naturelm_clamps_input_before_filterbank(tiny_copy, cases):
    allv = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy, return_features_only=True)
    nlm = build_model("esp_aves2_naturelm_audio_v1_beats", checkpoint=tiny_copy, return_features_only=True)
    loud = cases["equal.audio"] * 4
    assert torch.allclose(nlm.preprocess(loud), allv.preprocess(loud.clamp(-1, 1)))
    assert not torch.allclose(nlm.preprocess(loud), allv.preprocess(loud))


def test_pretrained_false_gives_fresh_weights_of_the_architecture(offline_hub):
    model = avex_hub.esp_aves2_sl_beats_all(pretrained=False, num_classes=10)
    assert model.config.encoder_layers == 12 and model.embedding_dim == 768
    assert model.classifier.out_features == 10 and model.weights_sha256 is None
    encoder = avex_hub.esp_aves2_sl_beats_all(pretrained=False, return_features_only=True)
    assert encoder.classifier is None


def test_pretrained_false_alone_is_the_fresh_encoder_offline(offline_hub):
    for build in (avex_hub.esp_aves2_sl_beats_all, avex_hub.esp_aves2_sl_beats_bio):
        model = build(pretrained=False)  # raised "pass num_classes=N" before (no label map offline)
        assert model.classifier is None and model.return_features_only and model.weights_sha256 is None
        assert model.config.encoder_layers == 12 and model.embedding_dim == 768
        with torch.inference_mode():
            assert model(torch.zeros(1, 16000)).shape == (1, 48, 768)  # frame features
    assert "num_classes" in avex_hub.esp_aves2_sl_beats_all.__doc__


@pytest.mark.parametrize("kwargs, message", [
    ({"pretrained": False, "num_classes": 0}, "positive int"),
    ({"pretrained": False, "num_classes": True}, "positive int"),
    ({"num_classes": 3}, "needs pretrained=False"),
])
def test_num_classes_is_checked(kwargs, message, offline_hub):
    with pytest.raises(ValueError, match=message):
        avex_hub.esp_aves2_sl_beats_all(**kwargs)


# -- through the Hugging Face cache, offline ---------------------------------------------------------
def _cache_tiny(cache, entry, tiny_dir):
    return populate_hub_cache(cache, entry.repo_id, {entry.filename: tiny_dir / "model.safetensors",
                                                     "label_map.json": tiny_dir / "label_map.json"})


def test_load_from_prepopulated_offline_cache(offline_hub, tiny_entry, tiny_dir, cases):
    snapshot = _cache_tiny(offline_hub, tiny_entry, tiny_dir)
    model = avex_hub.esp_aves2_sl_beats_all(progress=False)
    _assert_parity(model, cases)
    assert model.weights_sha256 == tiny_entry.sha256
    assert avex_hub.label_map().names == model.labels
    files = avex_hub.download_weights("esp-aves2-sl-beats-all")
    assert files["weights"].parent == snapshot


def test_digest_mismatch_in_cache_is_refused(offline_hub, tiny_dir):
    entry = weights_module.WEIGHTS["esp_aves2_sl_beats_all"]  # the real published digest
    _cache_tiny(offline_hub, entry, tiny_dir)
    with pytest.raises(ChecksumError) as info:
        avex_hub.esp_aves2_sl_beats_all()
    message = str(info.value)
    assert entry.filename in message and entry.sha256 in message
    assert sha256_file(tiny_dir / "model.safetensors") in message
    assert "--force-download" in message and "checkpoint=" in message


def test_offline_with_empty_cache_says_what_to_do(offline_hub):
    with pytest.raises(WeightsNotAvailableError) as info:
        avex_hub.esp_aves2_sl_beats_all()
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "hf download EarthSpeciesProject/esp-aves2-sl-beats-all esp-aves2-sl-beats-all.safetensors label_map.json" in message
    assert "checkpoint=" in message
    assert isinstance(info.value, FileNotFoundError)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=re.escape("expected one of")):
        build_model("esp_aves3")


def test_registry_is_data():
    assert set(avex_hub.WEIGHTS) == {"esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "esp_aves2_naturelm_audio_v1_beats"}
    for entry in avex_hub.WEIGHTS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.filename == entry.repo_id.split("/")[1] + ".safetensors"
        assert entry.licence == "CC-BY-NC-SA-4.0"


# -- the tensor digests of the network acceptance test, proven offline on the fixture -------------------------------
def test_tensor_digest_scheme_on_the_fixture(tiny_model, tiny_dir):
    import hashlib

    import numpy as np

    raw = _state(tiny_dir)
    names = list(OURS)
    digests = model_tensor_digests(tiny_model, names)
    for name in names:  # the same scheme by hand: fp32 C-order bytes of the file's tensor
        array = np.ascontiguousarray(raw[OURS[name]].numpy(), dtype="<f4")
        assert digests[name] == hashlib.sha256(array.tobytes()).hexdigest()
    # a transposed view holds the same numbers in another order: contiguous() makes the digest see that order
    weight = tiny_model.state_dict()[OURS[names[0]]]
    assert tensor_sha256(weight.T) == hashlib.sha256(weight.T.numpy().copy(order="C").tobytes()).hexdigest()
    assert tensor_sha256(weight.T) != tensor_sha256(weight)
    with pytest.raises(TypeError, match="float32"):
        tensor_sha256(weight.double())
    # a one-ulp change anywhere changes the digest
    bumped = weight.clone()
    bumped.view(-1)[7] = torch.nextafter(bumped.view(-1)[7], torch.tensor(1.0))
    assert tensor_sha256(bumped) != tensor_sha256(weight)
    # the table: five names per published file, each a key of our model, 64 hex digits each
    assert set(TENSOR_SHA256) == set(avex_hub.WEIGHTS)
    for table in TENSOR_SHA256.values():
        assert set(table) == set(OURS)
        assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in table.values())
    assert set(OURS.values()) <= set(tiny_model.state_dict())
