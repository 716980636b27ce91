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
