"""The real published files. Skipped unless AVEX_HUB_NETWORK_TESTS=1 (they need the Hub and Xeno-canto)."""

import urllib.request

import pytest
import torch

import avex_hub
from published_digests import TENSOR_SHA256, model_tensor_digests

pytestmark = pytest.mark.network


def test_real_weights_download_verify_and_classify_a_turtle_dove(tmp_path):
    model = avex_hub.esp_aves2_sl_beats_all()
    entry = avex_hub.get_weights("esp_aves2_sl_beats_all")
    assert model.weights_sha256 == entry.sha256
    assert model.config.encoder_layers == 12 and model.embedding_dim == 768
    assert model.backbone.predictor.out_features == 527
    assert "Streptopelia turtur" in model.label_map
    # Xeno-canto XC564654: a European turtle dove.
    recording = tmp_path / "XC564654.mp3"
    urllib.request.urlretrieve("https://xeno-canto.org/564654/download", recording)
    top = model.predict(recording)  # the full recording
    assert top[0].label == "Streptopelia turtur", top


@pytest.mark.parametrize("name", sorted(TENSOR_SHA256))
def test_published_tensors_load_bit_exact(name):
    """Five tensors of each published file, after loading into our model, hash as in the official library."""
    model = avex_hub.build_model(name)
    assert model_tensor_digests(model, TENSOR_SHA256[name]) == TENSOR_SHA256[name]


@pytest.mark.parametrize("name", ["esp_aves2_sl_beats_bio", "esp_aves2_naturelm_audio_v1_beats"])
def test_other_published_models_load(name):
    model = avex_hub.build_model(name)
    with torch.inference_mode():
        features = model.encode(torch.zeros(1, 16000)).features
    assert features.shape == (1, 48, 768)


@pytest.mark.parametrize("name", ["esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio"])
def test_published_label_maps_match_their_hub_address_and_pin(name):
    from avex_hub.hub.loading import download_weights, sha256_file
    from avex_hub.hub.integrity import cached_file_address

    entry = avex_hub.get_weights(name)
    path = download_weights(name)["label_map"]  # verified against its content address (and the pin, when set)
    checked = cached_file_address(path)
    assert checked is not None and checked[0] == checked[1], checked
    digest = sha256_file(path, reread=True)
    print(f"{name}: label_map.json SHA-256 {digest} (pin it as label_map_sha256 in avex_hub/hub/weights.py)")
    assert entry.label_map_sha256 in (None, digest)
