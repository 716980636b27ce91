"""Probes on the tiny checkpoint: shapes, frozen backbones, layer selection and pooling against manual computation."""

from __future__ import annotations

import copy
import pathlib

import pytest
import torch

import avex_hub
from avex_hub.heads.probes import AttentionPooling, Probe, attention_probe, linear_probe, load_probe, mlp_probe, save_probe
from conftest import REPO_ROOT

BUILDERS = {"linear": linear_probe, "mlp": mlp_probe, "attention": attention_probe}


@pytest.fixture(scope="module")
def padded(cases):
    audio, mask = cases["padded.audio"], cases["padded.padding_mask"]
    assert mask.any(dim=1).sum() == 2  # two of the three clips are padded: pooling must respect the mask
    return audio, mask


def _manual_pool(h: torch.Tensor, frame_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Row by row, over the frames that are not padding."""
    rows = [h[i][~frame_mask[i]] for i in range(len(h))]
    return torch.stack([r.mean(dim=0) if how == "mean" else r.amax(dim=0) for r in rows])


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("layers", ["last", [1, 2], "all"])
def test_forward_shapes(model, padded, kind, layers):
    probe = BUILDERS[kind](model, 5, layers=layers)
    with torch.no_grad():
        out = probe(*padded)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert probe.layer_indices == model.layer_indices(layers)
    assert probe.layer_weights.shape == (len(probe.layer_indices),)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_frozen_backbone_only_head_learns(model, padded, kind):
    probe = BUILDERS[kind](model, 4, layers="all")
    before = copy.deepcopy(model.state_dict())
    head_before = {k: v.clone() for k, v in probe.head_state_dict().items()}
    probe.train()
    assert probe.training and not probe.backbone.training  # layer drop of the tiny config must stay off
    assert not any(p.requires_grad for p in probe.backbone.parameters())
    optimiser = torch.optim.AdamW(probe.parameters(), lr=1e-2)  # all parameters: frozen ones must not move
    loss = torch.nn.functional.cross_entropy(probe(*padded), torch.tensor([0, 1, 3]))
    loss.backward()
    assert all(p.grad is None for p in probe.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.probe_parameters())
    optimiser.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(head_before[k], v) for k, v in probe.head_state_dict().items())
    assert not any(m.training for m in probe.backbone.modules())  # still so after the step
    assert probe.head.training


def test_unfrozen_backbone_learns_and_trains(tiny_dir, padded):
    backbone = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    probe = linear_probe(backbone, 4, freeze_backbone=False)
    probe.train()
    assert probe.backbone.training
    with torch.random.fork_rng():  # the tiny config has layer drop 0.05: seed it so the last layer runs
        torch.manual_seed(0)
        torch.nn.functional.cross_entropy(probe(*padded), torch.tensor([0, 1, 3])).backward()
    grads = [p.grad for p in backbone.backbone.encoder.layers[-1].parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_layer_selection_matches_hidden_states(model, padded):
    audio, mask = padded
    with torch.no_grad():
        hidden = model.hidden_states(audio, mask, layers="all")  # 4 tensors [B, N, C]
        frame_mask = model.encode(audio, mask).padding_mask
        pooled = [_manual_pool(h, frame_mask, "mean") for h in hidden]

        last = linear_probe(model, 5, layers="last")
        assert torch.allclose(last(audio, mask), last.head(pooled[-1]), atol=1e-5)
        negative = linear_probe(model, 5, layers=[-1])
        assert torch.allclose(negative(audio, mask), negative.head(pooled[-1]), atol=1e-5)

        mixed = linear_probe(model, 5, layers="all")
        mixed.layer_logits.copy_(torch.tensor([0.3, -1.0, 2.0, 0.5]))  # learned weights, not uniform
        w = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.5]), dim=0)
        manual = sum(w[i] * pooled[i] for i in range(4))
        assert torch.allclose(mixed(audio, mask), mixed.head(manual), atol=1e-5)

        fixed = linear_probe(model, 5, layers=[0, 2], learned_layer_weights=False)
        assert not fixed.layer_logits.requires_grad and fixed.probe_parameters() == list(fixed.head.parameters())
        assert torch.allclose(fixed(audio, mask), fixed.head((pooled[0] + pooled[2]) / 2), atol=1e-5)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_pooling_is_masked_pooling(model, padded, how):
    audio, mask = padded
    probe = mlp_probe(model, 5, layers=[1, 3], pooling=how)
    with torch.no_grad():
        out = model.encode(audio, mask, output_hidden_states=True)
        embedded = probe.embed(audio, mask)  # [B, L, C]
        assert embedded.shape == (3, 2, model.embedding_dim)
        for j, layer in enumerate([1, 3]):
            expected = _manual_pool(out.hidden_states[layer], out.padding_mask, how)
            assert torch.allclose(embedded[:, j], expected, atol=1e-5)
            unmasked = out.hidden_states[layer].mean(1) if how == "mean" else out.hidden_states[layer].amax(1)
            assert not torch.allclose(embedded[2, j], unmasked[2], atol=1e-3)  # the mask mattered
        assert torch.allclose(probe(audio, mask), probe.forward_embeddings(embedded), atol=1e-6)


def test_attention_pooling_ignores_padding_and_matches_manual():
    torch.manual_seed(0)
    pool = AttentionPooling(8, 2)
    frames = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = pool(frames, mask)
    changed = frames.clone()
    changed[1, 3:] = 100.0  # padding content must not matter
    assert torch.allclose(pool(changed, mask), out)
    k, v = pool.key(frames[1, :3]).view(3, 2, 4), pool.value(frames[1, :3]).view(3, 2, 4)
    for h in range(2):
        weights = torch.softmax(k[:, h] @ pool.query[h] / 2.0, dim=0)
        assert torch.allclose(out[1, 4 * h:4 * h + 4], weights @ v[:, h], atol=1e-6)


def test_torch_hub_load_linear_probe(model, padded):
    probe = torch.hub.load(str(REPO_ROOT), "linear_probe", model, 10, source="local")
    assert isinstance(probe, Probe) and probe.head.out_features == 10 and probe.frozen
    with torch.no_grad():
        assert probe(*padded).shape == (3, 10)
    attention = torch.hub.load(str(REPO_ROOT), "attention_probe", model, 3, source="local", layers="all")
    assert attention.needs_frames and attention.layer_indices == [0, 1, 2, 3]
    package = avex_hub.mlp_probe(model, 6, hidden_dim=32, multilabel=True)
    assert package.multilabel and package.head[0].out_features == 32


def test_probe_init_is_seeded_and_leaves_global_rng(model):
    state = torch.random.get_rng_state()
    a, b, c = linear_probe(model, 5, seed=1), linear_probe(model, 5, seed=1), linear_probe(model, 5, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)


def test_save_and_load_probe(model, padded, tmp_path):
    probe = mlp_probe(model, 4, layers="all", hidden_dim=16, label_names=["a", "b", "c", "d"])
    with torch.no_grad():
        probe.layer_logits.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0]))
    path = save_probe(probe, tmp_path / "probe.safetensors")
    assert (tmp_path / "probe.safetensors.json").is_file()
    loaded = load_probe(path, model)
    assert loaded.label_names == ["a", "b", "c", "d"] and loaded.config() == probe.config()
    with torch.no_grad():
        assert torch.equal(loaded(*padded), probe(*padded))
        headless = load_probe(path)  # no backbone: a head for precomputed embeddings
        emb = probe.embed(*padded)
        assert torch.equal(headless.forward_embeddings(emb), probe.forward_embeddings(emb))
    with pytest.raises(ValueError, match="no backbone"):
        headless(*padded)
    with pytest.raises(FileNotFoundError, match="save_probe"):
        load_probe(tmp_path / "missing.safetensors", model)


def _as_old_format(path, old_path):
    """The probe file at ``path`` as avex_hub wrote it before ``pooling`` named the probe's pooling: the config
    key ``aggregation`` and the attention module's tensors ``pooling.*``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from avex_hub.hub.provenance import PROBE_META_KEY

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[PROBE_META_KEY])
    meta["config"] = {("aggregation" if k == "pooling" else k): v for k, v in meta["config"].items()}
    text = json.dumps(meta, indent=1, ensure_ascii=False)
    tensors = {("pooling." + k[len("attention."):] if k.startswith("attention.") else k): v
               for k, v in load_file(str(path)).items()}
    save_file(tensors, str(old_path), metadata={PROBE_META_KEY: text})
    pathlib.Path(str(old_path) + ".json").write_text(text + "\n", encoding="utf-8")
    return old_path


@pytest.mark.parametrize("kind", ["attention", "mlp"])
def test_probe_file_in_the_old_format_still_loads(model, padded, tmp_path, kind):
    import json

    from avex_hub.hub.provenance import read_probe_metadata

    probe = attention_probe(model, 3, layers="all", seed=3) if kind == "attention" else \
        mlp_probe(model, 3, layers=[1, 2], pooling="max", hidden_dim=8, seed=3)
    path = save_probe(probe, tmp_path / "new.safetensors")
    meta = json.loads(pathlib.Path(str(path) + ".json").read_text())
    assert meta["config"]["pooling"] == probe.pooling and "aggregation" not in meta["config"]
    if kind == "attention":
        assert {k.split(".")[0] for k in probe.head_state_dict()} == {"layer_logits", "attention", "head"}
    old = _as_old_format(path, tmp_path / "old.safetensors")
    assert "aggregation" in json.loads(pathlib.Path(str(old) + ".json").read_text())["config"]
    assert read_probe_metadata(old)["config"] == probe.config() | {"label_names": None}
    loaded = load_probe(old, model)
    assert loaded.pooling == probe.pooling and loaded.config() == probe.config()
    with torch.no_grad():
        assert torch.equal(loaded(*padded), probe(*padded))
    edited = json.loads(pathlib.Path(str(old) + ".json").read_text())  # the provenance check reads the old key too
    wrong = "mean" if probe.pooling == "max" else "max"
    edited["config"]["aggregation"] = wrong
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import load_file, save_file

    from avex_hub.hub.provenance import PROBE_META_KEY
    save_file(load_file(str(old)), str(bad), metadata={PROBE_META_KEY: json.dumps(edited)})
    with pytest.raises(ValueError, match=f"field pooling={wrong!r} disagrees with its provenance"):
        load_probe(bad, model)


def test_bad_probe_arguments(model, padded):
    with pytest.raises(ValueError, match="pooling must be one of"):
        Probe(model, 5, pooling="median")
    with pytest.raises(ValueError, match="use attention_probe"):
        linear_probe(model, 5, pooling="attention")
    with pytest.raises(TypeError, match="pooling"):  # its pooling is attention; there is nothing to choose
        attention_probe(model, 5, pooling="attention")
    for build in (mlp_probe, attention_probe):  # an explicit 0 was silently replaced by 256 (attention_probe)
        with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
            build(model, 5, hidden_dim=0)
    with pytest.raises(ValueError, match=r"out of range; expected 0\.\.3"):
        linear_probe(model, 5, layers=[1, 7])
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        linear_probe(model, 1)
    with pytest.raises(TypeError, match="AvexModel"):
        linear_probe(torch.nn.Linear(3, 3), 5)
    with pytest.raises(ValueError, match="num_heads must divide"):
        attention_probe(model, 5, num_heads=5)
    with pytest.raises(ValueError, match="embedding_dim"):
        Probe(None, 5)
    probe = linear_probe(model, 5, layers=[1, 2])
    with pytest.raises(ValueError, match=r"expected embeddings \[batch, 2, 64\]"):
        probe.forward_embeddings(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="needs frames"):
        attention_probe(model, 5).forward_embeddings(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="shorter than"):
        probe(torch.zeros(1, 100))
