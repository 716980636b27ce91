"""The encoder's CPU fast path (avex_hub.encoder.fastpath): float32 inference runs its projections on oneDNN and
reuses one attention-bias buffer per forward, with the same numbers as the modules' own forward, and only where
nothing else (training, autocast, hooks, quantisation, export) expects the module to run. It is the one module of
the package that touches torch's private symbols."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avex_hub
from avex_hub.encoder import fastpath
from conftest import FIXTURE

pytestmark = pytest.mark.skipif(fastpath.ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear kernel")


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the oneDNN kernel while the test runs."""
    calls = []
    kernel = fastpath.ONEDNN_LINEAR

    def count(*args):
        calls.append(args[3])
        return kernel(*args)

    monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", count)
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
        fast = fastpath.linear(layer, x, activation)
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
    monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", None)  # the module's own forward everywhere
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


def test_trainable_biases_of_frozen_weights_take_the_module_forward(counted):
    # Bias-only fine-tuning: weights frozen, the input needs no gradient, the biases train. The kernel has no
    # backward, so a bias behind it would silently get no gradient.
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE).eval().requires_grad_(False)
    biases = [m.bias for m in model.backbone.encoder.modules() if isinstance(m, nn.Linear)]
    for bias in biases:
        bias.requires_grad_(True)
    model.embed(_audio(1)).sum().backward()
    assert all(b.grad is not None for b in biases)


# torch's notice that vmap runs SDPA through its per-example fallback: the test is about our kernels, not vmap's speed.
@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule")
def test_functorch_transforms_take_the_plain_arithmetic(tiny, counted):
    # vmap (per-example work, ensembles): the kernel has no batching rule and an out= write has no batched form.
    fbank = torch.randn(3, 1, 200, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = torch.func.vmap(lambda f: tiny.backbone(f).features)(fbank)
        looped = torch.stack([tiny.backbone(f).features for f in fbank])
    assert (batched - looped).abs().max() < 1e-4


def test_global_module_hooks_see_every_projection(tiny, counted, monkeypatch):
    def linears_seen():
        seen = []
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(m) if type(m) is nn.Linear else None)
        try:
            with torch.inference_mode():
                tiny.embed(_audio(1))
        finally:
            handle.remove()
        return len(seen)

    hooked = linears_seen()
    assert counted == []
    monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", None)
    assert hooked == linears_seen()


# torch.backends.mkldnn.flags() restates every oneDNN setting, and on a CPU build its TF32 setter notes that TF32
# needs an Intel GPU; nothing here uses TF32.
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN is available for Intel GPUs")
def test_dispatch_modes_and_disabled_onednn_take_the_module_forward(tiny, counted, monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    audio = _audio(1)
    with torch.inference_mode(), FlopCounterMode(display=False) as flops:
        tiny.embed(audio)
    assert counted == []
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        tiny.embed(audio)
    assert counted == []
    monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", None)
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:
        tiny.embed(audio)
    assert flops.get_total_flops() == plain.get_total_flops()


def test_layer_hooks_see_three_inputs_and_subclass_inputs_keep_their_linear(tiny, counted):
    seen = []
    layer = tiny.backbone.encoder.layers[0]
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(len(args)))
    try:
        with torch.inference_mode():
            tiny.embed(_audio(1))
    finally:
        handle.remove()
    assert seen == [3]  # (x, position_bias, padding_mask): the shared buffer travels as a keyword

    class Tagged(torch.Tensor):
        pass

    counted.clear()
    projection = nn.Linear(8, 4)
    with torch.no_grad():
        out = fastpath.linear(projection, torch.randn(2, 8).as_subclass(Tagged))
    assert counted == [] and type(out) is Tagged


def test_the_bias_buffer_is_shared_within_a_forward_and_only_where_allowed():
    a, b, c = torch.rand(2, 3, 5, 1), torch.rand(1, 3, 5, 5), torch.zeros(2, 1, 1, 5)
    c[0, ..., -1] = float("-inf")
    with torch.no_grad():
        expected = a * b + c
        with fastpath.shared_buffers():
            first = fastpath.multiply_add(a, b, c)
            assert torch.equal(first, expected)
            second = fastpath.multiply_add(b, a)  # the same buffer, written over
            assert second.data_ptr() == first.data_ptr() and torch.equal(second, a * b)
        outside = fastpath.multiply_add(a, b, c)
    assert torch.equal(outside, expected) and outside.data_ptr() != first.data_ptr()
    with fastpath.shared_buffers():
        trained = fastpath.multiply_add(a.requires_grad_(), b, c)  # autograd records it: a fresh tensor
        assert trained.requires_grad and trained.data_ptr() != fastpath.multiply_add(a.detach(), b).data_ptr()


def _torch_private_names() -> set[str]:
    """Private attribute names that torch's modules and tensors carry (any object of the package may hold one)."""
    return {name for obj in (nn.Module(), nn.Linear(1, 1), torch.zeros(1))
            for name in dir(obj) if name.startswith("_") and not name.endswith("__")}


def _private_torch_uses(path) -> list[str]:
    """Where a module reaches a private torch symbol: an import of one (``torch._C``, a private name from a torch
    module), an attribute chain from torch with a private part, ``getattr(..., "_name")``, or a private attribute
    that torch's modules and tensors carry (``layer._forward_hooks``)."""
    import ast

    tree = ast.parse(path.read_text())
    torch_names = set()  # local names bound to torch or one of its modules
    found = []
    private = lambda dotted: any(p.startswith("_") and not p.endswith("__") for p in dotted.split("."))  # noqa: E731
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch":
                    torch_names.add((alias.asname or alias.name).split(".")[0])
                    if private(alias.name):
                        found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            for alias in node.names:
                torch_names.add(alias.asname or alias.name)
                if private(f"{node.module}.{alias.name}"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    def from_torch(node) -> bool:
        while isinstance(node, (ast.Attribute, ast.Call)):
            node = node.value if isinstance(node, ast.Attribute) else node.args[0] if node.args else node.func
        return isinstance(node, ast.Name) and node.id in torch_names

    names = _torch_private_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if from_torch(node.value) or node.attr in names:
                found.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and private(str(node.args[1].value)) and from_torch(node.args[0])):
            found.append(f"line {node.lineno}: getattr(..., {node.args[1].value!r})")
    return found


def test_no_private_torch_symbol_outside_the_fast_path_module():
    from pathlib import Path

    root = Path(avex_hub.__file__).parent
    uses = {str(p.relative_to(root)): _private_torch_uses(p) for p in sorted(root.rglob("*.py"))}
    assert _private_torch_uses(Path(fastpath.__file__))  # the finder sees what the fast path does use
    assert {name: found for name, found in uses.items() if found and name != "encoder/fastpath.py"} == {}
