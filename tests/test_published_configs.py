"""The training-time settings each published file was trained with, and how they act: layer drop and input dropout in
train mode only (as in the reference BEATs), the gradient decay ratio scaling gradients before every layer (as there)."""

from __future__ import annotations

import copy

import json
from dataclasses import replace

import pytest
import torch

from avex_hub.heads import finetune
from avex_hub.encoder.beats import BEATs, BEATsConfig
from avex_hub.hub.weights import WEIGHTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# avex 1.4.0, api/configs/official_models/<name>.yml, init_config (compared field by field when this was written).
PUBLISHED_TRAINING = {
    "esp_aves2_sl_beats_all": dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                                   predictor_dropout=0.0, encoder_layerdrop=0.05, layer_wise_gradient_decay_ratio=0.6),
    "esp_aves2_sl_beats_bio": dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
                                   predictor_dropout=0.0, encoder_layerdrop=0.05, layer_wise_gradient_decay_ratio=0.6),
    "esp_aves2_naturelm_audio_v1_beats": dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
                                              dropout_input=0.1, predictor_dropout=0.0, encoder_layerdrop=0.05,
                                              layer_wise_gradient_decay_ratio=1.0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TRAINING))
def test_registry_carries_the_published_training_settings(name):
    config = WEIGHTS[name].config
    assert {k: getattr(config, k) for k in PUBLISHED_TRAINING[name]} == PUBLISHED_TRAINING[name]
    # the architecture is the same for all three (12 x 768, DeepNorm, the AudioSet predictor)
    assert (config.encoder_layers, config.encoder_embed_dim, config.deep_norm, config.predictor_class) == \
        (12, 768, True, 527)


def _tiny_config(tiny_dir, **changes) -> BEATsConfig:
    base = BEATsConfig.from_dict(json.loads((tiny_dir / "config.json").read_text()))
    return replace(base, **changes)


def _fbank(frames: int = 32) -> torch.Tensor:
    return torch.randn(2, frames, 128, generator=torch.Generator().manual_seed(0))


def _layer_runs(encoder: BEATs, forwards: int) -> torch.Tensor:
    """``[forwards, layers]`` booleans: whether each layer ran in each forward pass."""
    ran: list[int] = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, layer in enumerate(encoder.encoder.layers)]
    out = torch.zeros(forwards, len(encoder.encoder.layers), dtype=torch.bool)
    fbank = _fbank()
    with torch.no_grad():
        for f in range(forwards):
            ran.clear()
            encoder(fbank)
            out[f, ran] = True
    for hook in hooks:
        hook.remove()
    return out


def test_layerdrop_skips_each_layer_with_its_probability_in_train_mode_only(tiny_dir):
    p = 0.3
    model = BEATs(_tiny_config(tiny_dir, encoder_layerdrop=p)).train()
    torch.manual_seed(0)
    runs = _layer_runs(model, 400)  # 1200 independent draws, one per layer and pass
    dropped = (~runs).float()
    # binomial: mean 0.3, standard error sqrt(0.3 * 0.7 / n); allow 4 standard errors
    assert abs(dropped.mean().item() - p) <= 4 * (p * (1 - p) / dropped.numel()) ** 0.5
    for layer in dropped.T:  # every layer has the same chance, drawn per layer (not one draw per pass)
        assert abs(layer.mean().item() - p) <= 4 * (p * (1 - p) / len(layer)) ** 0.5
    patterns = {tuple(r.tolist()) for r in runs}
    assert len(patterns) == 8  # all combinations occur: the layers are drawn independently
    torch.manual_seed(0)
    assert torch.equal(_layer_runs(model, 400), runs)  # seeded
    assert _layer_runs(model.eval(), 50).all()  # never in eval mode


def test_published_layerdrop_is_on_in_train_mode(tiny_dir):
    model = BEATs(_tiny_config(tiny_dir)).train()  # the fixture records the published 0.05
    assert model.encoder.layerdrop == 0.05
    torch.manual_seed(1)
    dropped = (~_layer_runs(model, 300)).float().mean().item()
    assert abs(dropped - 0.05) <= 4 * (0.05 * 0.95 / 900) ** 0.5


def test_dropout_input_acts_on_the_encoder_input_in_train_mode_only(tiny_dir):
    p = 0.4
    model = BEATs(_tiny_config(tiny_dir, dropout_input=p, encoder_layerdrop=0.0))
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    fbank = _fbank()
    with torch.no_grad():
        model.eval()
        clean = model(fbank).features
        reference = seen.pop()
        assert torch.equal(model(fbank).features, clean) and torch.equal(seen.pop(), reference)  # eval: no dropout
        model.train()
        torch.manual_seed(0)
        noisy = model(fbank).features
        dropped_input = seen.pop()
    zero = dropped_input == 0
    assert abs(zero.float().mean().item() - p) < 0.05  # ~p of the projected patch features are zeroed ...
    kept = ~zero
    assert torch.allclose(dropped_input[kept], reference[kept] / (1 - p), atol=1e-5)  # ... the rest scaled 1/(1-p)
    assert not torch.allclose(noisy, clean)
    # nothing else is stochastic in this config: without input dropout, train and eval agree
    model = BEATs(_tiny_config(tiny_dir, dropout_input=0.0, encoder_layerdrop=0.0)).eval()
    with torch.no_grad():
        assert torch.allclose(model.train()(fbank).features, model.eval()(fbank).features)


def test_published_gradient_decay_scales_gradients_before_every_layer(tiny_dir):
    """The config's layer_wise_gradient_decay_ratio acts as in the reference BEATs: the gradient entering each layer
    from above is multiplied by the ratio, so the embedding stage of a 3-layer encoder gets ratio ** 3 of the
    gradient and the top layer's own weights an unscaled one; the forward pass is unchanged."""
    import avex_hub

    decayed = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)  # ratio 0.6 in its config.json
    assert decayed.backbone.encoder.gradient_decay == 0.6
    plain = copy.deepcopy(decayed)
    plain.backbone.encoder.gradient_decay = 1.0
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    grads = []
    for model in (decayed, plain):
        model.zero_grad()
        out = model.encode(audio).features
        out.square().sum().backward()
        grads.append((out.detach(), model.backbone.patch_embedding.weight.grad.clone(),
                      model.backbone.encoder.layers[-1].fc1.weight.grad.clone()))
    (out_d, embed_d, top_d), (out_p, embed_p, top_p) = grads
    assert torch.equal(out_d, out_p)
    assert torch.allclose(embed_d, embed_p * 0.6 ** 3, rtol=1e-4, atol=1e-9)
    assert torch.allclose(top_d, top_p, rtol=1e-5, atol=1e-9)
    with torch.no_grad():  # no graph, nothing to scale (kernels without autograd may differ in the last bits)
        assert torch.allclose(decayed.encode(audio).features, out_p, atol=1e-5)


def test_default_layer_decay_is_the_learning_rate_decay_not_the_gradient_ratio(tiny_dir):
    import avex_hub

    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    groups = finetune.layerwise_param_groups(model, lr=1.0, unfreeze="all")
    assert finetune.LAYER_DECAY == 0.75
    assert {g["depth"]: g["lr"] for g in groups} == {d: pytest.approx(0.75 ** (4 - d)) for d in range(5)}


def test_classifier_starts_from_the_published_settings_and_keeps_the_override(tiny_dir):
    pytest.importorskip("lightning")
    import avex_hub
    from avex_hub.integrations.lightning import AvexClassifier

    build = lambda: avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)  # noqa: E731
    module = AvexClassifier(build(), labels=["a", "b"])
    assert module.hparams.layer_decay == finetune.LAYER_DECAY and module.model.backbone.encoder.layerdrop == 0.05
    assert AvexClassifier(build(), labels=["a", "b"], layer_decay=0.9).hparams.layer_decay == 0.9
    assert AvexClassifier(build(), labels=["a", "b"], layerdrop=0.2).model.backbone.encoder.layerdrop == 0.2
    assert AvexClassifier(build(), labels=["a", "b"], layerdrop=0.0).model.backbone.encoder.layerdrop == 0.0
