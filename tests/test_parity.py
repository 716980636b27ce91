"""Parity with the reference BEATs outputs stored in the beats-tiny fixture (max abs diff <= 1e-4)."""

import torch

from avex_hub.encoder.beats import frame_padding_mask
from avex_hub.encoder.fbank import KaldiFbank, mel_filterbank, num_frames

TOL = 1e-4


def test_filterbank_matches_reference(tiny_model, cases):
    fbank = tiny_model.preprocess(cases["equal.audio"])
    assert fbank.shape == cases["equal.fbank"].shape
    assert (fbank - cases["equal.fbank"]).abs().max() <= TOL


def test_filterbank_is_batched_and_fp32_under_autocast(cases):
    audio = cases["equal.audio"]
    module = KaldiFbank()
    single = torch.cat([module(a.unsqueeze(0) * 2**15) for a in audio])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batched = module(audio * 2**15)
    assert batched.dtype == torch.float32
    assert torch.allclose(single, batched, atol=1e-5)


def test_filterbank_layout():
    weights = mel_filterbank()
    assert weights.shape == (128, 257)
    assert torch.all(weights[:, -1] == 0)  # Kaldi leaves the Nyquist bin out
    # At 128 bins the 4th triangle falls between two FFT points and is empty, in Kaldi too
    # (its log energy is the epsilon floor); every other bin sees some spectrum.
    assert (weights.sum(dim=1) == 0).nonzero().flatten().tolist() == [3]
    assert num_frames(24_000) == 148 and num_frames(399) == 0


def test_equal_length_features_and_logits(tiny_model, cases):
    with torch.inference_mode():
        out = tiny_model.encode(cases["equal.audio"])
        logits = tiny_model(cases["equal.audio"])
    assert out.features.shape == cases["equal.features"].shape
    assert (out.features - cases["equal.features"]).abs().max() <= TOL
    assert (logits - cases["equal.logits"]).abs().max() <= TOL


def test_padded_batch_features_mask_and_logits(tiny_model, cases):
    audio, mask = cases["padded.audio"], cases["padded.padding_mask"]
    assert torch.equal(mask.sum(1), audio.shape[1] - cases["padded.lengths"])
    with torch.inference_mode():
        out = tiny_model.encode(audio, mask)
        logits = tiny_model(audio, mask)
    assert torch.equal(out.padding_mask, cases["padded.frame_padding_mask"])
    valid = ~out.padding_mask
    assert (out.features - cases["padded.features"])[valid].abs().max() <= TOL
    assert (logits - cases["padded.logits"]).abs().max() <= TOL


def test_frame_mask_derivation_follows_reference():
    # 10 samples -> 3 frames: one trailing sample dropped, runs of 3, a frame is padding only if all of it is
    mask = torch.tensor([[False] * 5 + [True] * 5])
    assert frame_padding_mask(mask, 3).tolist() == [[False, False, True]]


def test_hidden_states_and_embeddings(tiny_model, cases):
    audio = cases["equal.audio"]
    with torch.inference_mode():
        states = tiny_model.hidden_states(audio)
        assert len(states) == tiny_model.num_layers + 1
        assert (states[-1] - cases["equal.features"]).abs().max() <= TOL
        first_two = tiny_model.hidden_states(audio, layers=[0, 2])
        assert torch.allclose(first_two[1], states[2], atol=1e-6)
        embedding = tiny_model.embed(audio)
        assert torch.allclose(embedding, cases["equal.features"].mean(1), atol=TOL)
        emb_max = tiny_model.embed(audio, layer=1, pooling="max")
        assert torch.allclose(emb_max, states[1].amax(1), atol=1e-6)
        several = tiny_model.pooled_layers(audio, layers=[2, 0, -1], pooling="max")  # [B, 3, C], in the order asked
        assert several.shape == (len(audio), 3, tiny_model.embedding_dim)
        for j, i in enumerate([2, 0, -1]):
            assert torch.allclose(several[:, j], states[i].amax(1), atol=1e-6)
        # padded pooling uses only real frames
        padded = tiny_model.embed(cases["padded.audio"], cases["padded.padding_mask"])
        valid = ~cases["padded.frame_padding_mask"]
        expected = (cases["padded.features"] * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        assert (padded - expected).abs().max() <= TOL


def test_features_only_and_1d_input(tiny_dir, cases):
    from avex_hub import esp_aves2_sl_beats_all

    model = esp_aves2_sl_beats_all(checkpoint=tiny_dir, return_features_only=True)
    with torch.inference_mode():
        features = model(cases["equal.audio"][0])
    assert features.shape == (1, 72, 64)
    assert (features[0] - cases["equal.features"][0]).abs().max() <= TOL
    assert not model.training


def test_bf16_and_int8_stay_close_to_fp32(tiny_model, cases):
    from avex_hub.encoder.precision import inference_context, prepare_for_inference

    audio = cases["padded.audio"]
    mask = cases["padded.padding_mask"]
    with torch.inference_mode():
        reference = tiny_model.embed(audio, mask)
        top1 = tiny_model(audio, mask).argmax(1)
    for precision in ("bf16", "int8"):
        model = prepare_for_inference(tiny_model, precision, "cpu")
        with inference_context(precision, "cpu"):
            embedding = model.embed(audio, mask).float()
            logits = model(audio, mask).float()
        cosine = torch.nn.functional.cosine_similarity(embedding, reference)
        assert cosine.min() >= 0.99, (precision, cosine)
        assert torch.equal(logits.argmax(1), top1), precision
