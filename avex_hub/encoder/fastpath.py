"""The encoder's CPU fast path: the one file that touches torch's private symbols.

Two shortcuts make the encoder's inference faster than its modules' own forward, with the same arithmetic:

* :func:`linear`: on the CPU in float32, a projection (and fc1's GELU, fused) runs on oneDNN's matmul kernel.
  torch's ``F.linear`` calls the BLAS it was built with (MKL in the x86 wheels), and on the AMD EPYC where this was
  measured MKL's float32 GEMM reached about half of oneDNN's speed (benchmarks/speed.py).
* :func:`multiply_add`: the ``[B, H, N, N]`` gated attention bias is written into one buffer that the layers of a
  forward share (:func:`shared_buffers`). A fresh tensor that large (47 MB in float32 at batch 4 of 10 s windows)
  sits above glibc's highest mmap threshold (32 MB), so every layer would fault its pages in anew: 13 ms against
  0.8 ms into a reused buffer on that EPYC, about a tenth of a float32 forward.

One switch, :func:`allowed`, decides for both: they run only where nothing records, transforms or captures the
arithmetic (autograd, ``torch.func`` transforms, dispatch modes such as FlopCounterMode, scripting, tracing, ONNX
export, ``torch.compile``). The linear kernel further needs a plain ``nn.Linear`` without hooks on float32 CPU
tensors outside autocast; ``torch.backends.mkldnn.flags(enabled=False)`` turns it off. Where this torch lacks one
of the private symbols, the fast path turns itself off: slower, never wrong. A torch upgrade breaks this file only.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module

__all__ = ["allowed", "linear", "multiply_add", "shared_buffers"]


def _onednn_linear_op():
    """torch's oneDNN (mkldnn) linear kernel, or None where this torch build has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


# The kernel: ``None`` sends every projection through the module's own forward (tests set it to compare both).
ONEDNN_LINEAR = _onednn_linear_op()

# torch's own (private) probes for active transforms and dispatch modes; where a torch lacks them, allowed()
# cannot tell and answers False.
_INTERPRETER_STACK = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
_DISPATCH_STACK_LEN = getattr(torch._C, "_len_torch_dispatch_stack", None)

# The buffers of the forward being run (set by shared_buffers), or None outside one.
_BUFFERS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("avex_hub_fastpath_buffers", default=None)


def allowed(*tensors: torch.Tensor | None) -> bool:
    """The one switch: whether a shortcut may replace the plain arithmetic on ``tensors``.

    False while autograd records an operation on them (grad mode on and one of them requires grad), and while the
    forward is scripted, traced, exported, compiled, run under a ``torch.func`` transform (the oneDNN kernel has
    no batching rule, an ``out=`` write has no batched form) or under a dispatch mode (a FlopCounterMode would not
    count the kernel as a linear, a FakeTensorMode cannot fake it).
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling() or _INTERPRETER_STACK is None or _DISPATCH_STACK_LEN is None:
        return False
    return _INTERPRETER_STACK() is None and _DISPATCH_STACK_LEN() == 0


def linear(layer: nn.Module, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """``layer(x)``, then the ``activation`` (``"none"`` or ``"gelu"``, the exact erf GELU).

    Float32 CPU inference through a plain ``nn.Linear`` runs on oneDNN with the GELU fused (the same float32
    arithmetic: max |difference| to float64 of the same order as ``F.linear``'s). Everything else, and any layer a
    user has replaced, wrapped, hooked or quantised, or that is being trained, traced, compiled or exported, takes
    the module's own forward, so hooks and dispatch modes see every projection.
    """
    if ONEDNN_LINEAR is not None and _plain_linear(layer, x) and allowed(x, layer.weight, layer.bias):
        return ONEDNN_LINEAR(x, layer.weight, layer.bias, activation, [], "none" if activation == "gelu" else "")
    out = layer(x)
    return F.gelu(out) if activation == "gelu" else out


def _plain_linear(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``layer(x)`` is exactly a float32 CPU ``nn.Linear`` that nothing watches or redirects."""
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        return False
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
        return False
    if not torch.backends.mkldnn.enabled or torch.is_autocast_enabled("cpu"):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or layer.weight.dtype != torch.float32 or x.is_mkldnn:
        return False
    # A tensor subclass (quantised or sharded weights, ...) keeps its own linear.
    return type(layer.weight.data) is torch.Tensor and type(x) is torch.Tensor


@contextlib.contextmanager
def shared_buffers() -> Iterator[None]:
    """Within it, :func:`multiply_add` writes into one buffer reused by every call (the layers of one forward:
    each layer's attention has consumed its bias before the next layer writes it). Freed on exit."""
    token = _BUFFERS.set({})
    try:
        yield
    finally:
        _BUFFERS.reset(token)


def multiply_add(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """``a * b`` (plus ``c`` when given), into the shared buffer inside :func:`shared_buffers` where
    :func:`allowed`, else a new tensor. The result is only valid until the next call in the same forward."""
    buffers = _BUFFERS.get()
    if buffers is None or not allowed(a, b, c):
        return a * b if c is None else a * b + c
    shape, dtype = torch.broadcast_shapes(a.shape, b.shape), torch.result_type(a, b)
    buffer = buffers.get("product")
    if buffer is None or buffer.shape != shape or buffer.dtype != dtype or buffer.device != a.device:
        buffer = buffers["product"] = torch.empty(shape, dtype=dtype, device=a.device)
    torch.mul(a, b, out=buffer)
    return buffer if c is None else buffer.add_(c)
