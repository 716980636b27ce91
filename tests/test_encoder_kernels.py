"""The encoder's float32 CPU inference runs its projections on oneDNN (avex_hub.encoder.beats.linear): the same
numbers as the module's own forward, and only where nothing else (training, autocast, hooks, quantisation,
export) expects the module to run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avex_hub
from avex_hub.encoder import beats
from conftest import FIXTURE

pytestmark = pytest.mark.skipif(beats._ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear kernel")


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the oneDNN kernel while the test runs."""
    calls = []
    kernel = beats._ONEDNN_LINEAR

    def count(*args):
        calls.append(args[3])
        return kernel(*args)

    monkeypatch.setattr(beats, "_ONEDNN_LINEAR", count)
    return calls


@pytest.fixture(scope="module")
def tiny():
    return avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE).eval()


def _audio(n=2, seconds=2.0):
    return torch.randn(n, int(16000 * seconds), generator=torch.Generator().manual_seed(3)) * 0.1


@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_same_numbers_as_the_module(activation):
    layer = nn.Linear(96, 384)
    x = torch.randn(3, 50, 96)
    with torch.no_grad():
        fast = beats.linear(layer, x, activation)
        plain = layer(x)
        plain = nn.functional.gelu(plain) if activation == "gelu" else plain
        exact = x.double() @ layer.weight.double().t() + layer.bias.double()
        exact = nn.functional.gelu(exact) if activation == "gelu" else exact
    assert fast.shape == plain.shape and fast.dtype == torch.float32
    # Both float32 kernels sit within float32 rounding of the float64 answer.
    assert (fast.double() - exact).abs().max() < 1e-5
    assert (fast - plain).abs().max() < 1e-5


def test_inference_uses_the_kernel_and_keeps_the_numbers(tiny, counted, monkeypatch):
    audio = _audio()
    with torch.inference_mode():
        fast = tiny.embed(audio)
    layers = tiny.config.encoder_layers
    assert counted.count("gelu") == layers  # fc1 + GELU fused, once per layer
    assert len(counted) == layers * 6 + (tiny.backbone.post_extract_proj is not None)  # q, k, v, out, fc1, fc2
    monkeypatch.setattr(beats, "_ONEDNN_LINEAR", None)  # the module's own forward everywhere
    with torch.inference_mode():
        plain = tiny.embed(audio)
    assert (fast - plain).abs().max() < 1e-5


def test_training_autocast_and_hooks_take_the_module_forward(tiny, counted):
    audio = _audio(1)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        tiny.embed(audio)
    assert counted == []
    trainable = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE).train()
    trainable.embed(audio).sum().backward()
    # (any single layer may be dropped in training: layer drop 0.05; the patch embedding always runs)
    assert counted == [] and trainable.backbone.patch_embedding.weight.grad is not None
    seen = []
    handle = tiny.backbone.encoder.layers[0].fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.inference_mode():
            tiny.embed(audio)
    finally:
        handle.remove()
    assert len(seen) == 1  # the hooked layer ran as a module, the others on the kernel
    assert len(counted) == 6 * tiny.config.encoder_layers + (tiny.backbone.post_extract_proj is not None) - 1


def test_frozen_encoder_under_grad_uses_the_kernel(counted):
    # Online probe training: grad is on for the head, the encoder is frozen, its input needs no gradient.
    frozen = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE).eval().requires_grad_(False)
    out = frozen.embed(_audio(1))
    assert len(counted) > 0 and not out.requires_grad
