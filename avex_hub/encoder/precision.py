"""Device policy, the one home: where work runs, how many windows go in a batch, how many processes decode, and
at which numeric precision (``"fp32" | "bf16" | "int8"``: a model and a context for each).

- ``fp32``: the reference numerics.
- ``bf16``: autocast of the transformer to bfloat16 (the filterbank stays fp32); fast on CUDA and on
  CPUs with AMX/AVX512-BF16.
- ``int8``: dynamic int8 quantisation of the Linear layers (weights int8, activations quantised on
  the fly); CPU only. On the AMD EPYC (avx512_bf16) of README's speed table it is the fastest PyTorch mode at the
  CPU's default batch of 2 (1.28x bf16) and bf16 is the closer to fp32; on the Xeon with AMX bf16 was faster.

Devices: ``device=None`` has one meaning in the whole package (:data:`DEVICE_NONE`: where the model or tensor
already is), decided by :func:`device_for`; ``"auto"`` asks for CUDA when available (the command line's default);
:func:`resolve_device` checks a device asked for.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import warnings

import torch
from torch import nn

__all__ = ["PRECISIONS", "DEVICE_NONE", "resolve_device", "device_for", "default_batch_size", "batch_size_for",
           "default_num_workers", "check_precision", "prepare_for_inference", "inference_context"]

PRECISIONS = ("fp32", "bf16", "int8")


# What ``device=None`` means everywhere: training, prediction, evaluation, metrics, extraction, the file pipelines,
# the agile archive, the scikit-learn embedder. Their docstrings state this sentence word for word
# (tests/test_devices.py checks).
DEVICE_NONE = ("``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no "
               "device.")


def resolve_device(device: str | torch.device | int | None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``None`` -> the CPU (nothing is at hand to stay with; where a
    model or tensor is, :func:`device_for` decides); anything else as given, checked."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', another torch device or None, got {device!r} "
                         f"({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r} was asked for but torch sees {torch.cuda.device_count()} CUDA "
                         f"device(s); use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def device_for(owner, device: str | torch.device | int | None = None) -> torch.device:
    """The device to run on: ``device`` when given (checked by :func:`resolve_device`, ``"auto"`` included), else
    where ``owner`` already is: a module's parameters (or buffers), a tensor's own device, the CPU for anything
    else (arrays, lists, a module with no tensors). The one decision behind :data:`DEVICE_NONE`."""
    if device is not None:
        return resolve_device(device)
    if isinstance(owner, torch.Tensor):
        return owner.device
    if isinstance(owner, nn.Module):
        first = next(itertools.chain(owner.parameters(), owner.buffers()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


def default_batch_size(device: torch.device) -> int:
    """Windows per batch: 2 on CPU, 64 on CUDA (a starting point: `benchmarks/throughput.py --device cuda
    --batch-sizes 16,32,64,128` measures the batch that saturates a given GPU).

    On a CPU a larger batch buys no speed (one 10 s window is already large matrix products) but holds more
    attention matrices at once: 12 windows of the full model took 12.7 / 14.0 / 14.2 s at batch 1 / 2 / 8 with
    peaks 1.03x / 1.10x / 1.52x that of a single 10 s clip (benchmarks/memory.py, 2-core AMD EPYC, 1 thread).
    """
    return 64 if device.type == "cuda" else 2


def batch_size_for(device: torch.device, batch_size: int | None = None) -> int:
    """``batch_size`` windows per model call, checked (a positive int), or :func:`default_batch_size` for
    ``device`` when None."""
    if batch_size is None:
        return default_batch_size(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (windows per model call) or None, got {batch_size!r}")
    return batch_size


def default_num_workers(device: torch.device | str | None = None) -> int:
    """Decoding worker processes. On CUDA: cores - 1, at most 4. On the CPU the model already uses every
    core and decoding costs a few percent of it, so: none on 1-3 cores (a worker there slows the model's
    threads more than it saves; benchmarks/RESULTS.md), one from 4 cores on."""
    cores = os.cpu_count() or 1
    if resolve_device(device).type == "cuda":
        return max(0, min(4, cores - 1))
    return 0 if cores < 4 else 1


def check_precision(precision: str, device: torch.device) -> None:
    """A ValueError for an unknown precision, or one the device cannot run (int8 is CPU-only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' runs on the CPU only, not on {device}; use bf16 on {device.type}")


def prepare_for_inference(model: nn.Module, precision: str = "fp32",
                          device: str | torch.device | None = None) -> nn.Module:
    """The model to run at ``precision`` on ``device``, in eval mode.

    For ``int8`` this is a quantised copy (the caller's model is never modified); for ``bf16`` on the CPU a copy
    whose Linear and Conv2d weights are already bfloat16 (run it under :func:`inference_context`); otherwise the
    model itself, moved to ``device``. ``device=None`` runs where the model (or tensor) already is, and on the CPU
    for anything on no device.
    """
    device = device_for(model, device)
    check_precision(precision, device)
    if precision == "int8":
        return _quantize_int8(model)
    if precision == "bf16" and device.type == "cpu":
        return _bf16_weights(model.to(device).eval())
    return model.to(device).eval()


def _bf16_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear and Conv2d weights and biases are bfloat16, the rest shared in value.

    Autocast casts a float32 weight to bfloat16 on every call: with the CPU's batch of 2 windows that was a third of
    a bf16 forward's operator time (benchmarks/profile_bf16.py). Casting once gives the very same numbers (autocast
    rounds a weight to bfloat16 the same way each call) at half the weights' memory traffic. The float32 weights are
    never copied: the copy is made with their bfloat16 versions in their place.
    """
    converted = {id(p): nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                 for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)
                 for p in (m.weight, m.bias) if p is not None}
    return copy.deepcopy(model, memo=dict(converted))


def _quantize_int8(model: nn.Module) -> nn.Module:
    """A dynamically int8-quantised copy of ``model`` (Linear layers), through torch's eager quantisation.

    torch marks that API deprecated in favour of torchao; its notices are ours to handle, not the user's,
    so they are silenced here, and a torch that no longer ships it gets an error that names the way out.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # pragma: no cover - depends on the installed torch
        raise ValueError(f"precision='int8' needs torch's dynamic quantisation, which torch {torch.__version__} "
                         f"no longer provides ({error}); use precision='bf16' (as fast on CPUs with bf16 units) "
                         "or 'fp32'") from error
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def inference_context(precision: str = "fp32", device: str | torch.device | None = None):
    """``torch.inference_mode`` plus bf16 autocast when asked for."""
    device = resolve_device(device)
    check_precision(precision, device)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if precision == "bf16":
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    return stack
