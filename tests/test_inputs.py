"""Bad audio gets a clear TypeError/ValueError that says what was expected."""

import numpy as np
import pytest
import torch


@pytest.mark.parametrize(
    "audio, error, pattern",
    [
        (np.zeros(16000, dtype=np.float32), TypeError, "torch.Tensor"),
        (torch.zeros(16000, dtype=torch.int16), TypeError, "divide by 32768"),
        (torch.zeros(2, 1, 16000), ValueError, r"\[batch, samples\]"),
        (torch.zeros(0), ValueError, "empty"),
        (torch.zeros(1, 2000), ValueError, "shorter than the 2800 samples"),
        (torch.full((2, 16000), float("nan")), ValueError, "NaN or infinite"),
        (torch.tensor([0.0] * 15999 + [float("inf")]), ValueError, "1 NaN or infinite samples"),
    ],
)
def test_bad_audio(tiny_model, audio, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny_model(audio)


def test_bad_padding_masks(tiny_model):
    audio = torch.zeros(2, 16000)
    with pytest.raises(TypeError, match="bool"):
        tiny_model(audio, torch.zeros(2, 16000))
    with pytest.raises(ValueError, match="must equal audio shape"):
        tiny_model(audio, torch.zeros(2, 100, dtype=torch.bool))
    mask = torch.zeros(2, 16000, dtype=torch.bool)
    mask[1] = True
    with pytest.raises(ValueError, match=r"rows \[1\] are all padding"):
        tiny_model(audio, mask)


def test_layer_selection_errors(tiny_model):
    with pytest.raises(ValueError, match="out of range"):
        tiny_model.hidden_states(torch.zeros(1, 16000), layers=[7])
    with pytest.raises(TypeError):
        tiny_model.hidden_states(torch.zeros(1, 16000), layers="middle")
    with pytest.raises(ValueError, match="pooling"):
        tiny_model.embed(torch.zeros(1, 16000), pooling="median")
    assert tiny_model.layer_indices(-1) == [3] and tiny_model.layer_indices("last") == [3]


def test_predict_needs_a_sample_rate_for_arrays(tiny_model):
    with pytest.raises(ValueError, match="sample_rate="):
        tiny_model.predict(np.zeros(16000, dtype=np.float32))


def test_predict_files_and_arrays_at_any_rate(tiny_model, tmp_path, cases):
    import soundfile as sf

    from avex_hub.audio.resampling import resample

    clip = cases["equal.audio"][0]
    stereo48 = resample(clip, 16000, 48000).numpy()
    stereo48 = np.stack([stereo48, stereo48 * 0.5], axis=1)  # [samples, channels] as soundfile writes
    path = tmp_path / "clip48k.wav"
    sf.write(path, stereo48, 48000, subtype="FLOAT")
    mono16 = resample(torch.from_numpy(stereo48.T.mean(0)), 48000, 16000)
    with torch.inference_mode():
        expected = torch.sigmoid(tiny_model.logits(mono16.unsqueeze(0)))[0]
    from_file = tiny_model.predict(path, top_k=3)
    from_array = tiny_model.predict(stereo48.T, sample_rate=48000, top_k=3)
    assert [p.label for p in from_file] == [p.label for p in from_array]
    top = expected.topk(3)
    assert [p.index for p in from_file] == top.indices.tolist()
    assert np.allclose([p.score for p in from_file], top.values.numpy(), atol=1e-5)
    assert from_file[0].label == tiny_model.label_map.name(from_file[0].index)
    both = tiny_model.predict([path, path], top_k=1)
    assert len(both) == 2 and both[0][0] == from_file[0]
