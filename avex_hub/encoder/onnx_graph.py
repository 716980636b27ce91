"""The model as one ONNX graph, from 16 kHz audio to what a run needs: written, quantised and checked here.

Two graphs of the model's own modules:

* :class:`ExportGraph`, the file ``avex-hub export`` writes: ``audio`` ``[batch, samples]`` in, ``features``
  (last layer), ``embedding`` (their mean) and, with a species head, ``logits`` out; rows of equal length.
* :class:`RunGraph`, what the runtimes run (:mod:`avex_hub.encoder.runtimes`): the normalised filterbank and its
  frame padding mask in (the last window of a file is padded and masked, as in PyTorch), ``embeddings``
  ``[batch, layers, C]`` (the layers asked for, pooled over the frames that are not padding) and optionally
  ``logits`` out.

In the export, the filterbank's framing, DC removal, pre-emphasis, window and 512-point real DFT are one linear map
of each 400-sample frame, so they become a single strided convolution with a precomputed basis instead of an FFT: ONNX's
``DFT`` operator needs opset 20 and is not run correctly by every runtime, a convolution is (and it is closer to a
float64 filterbank than torch's float32 FFT). Input checks stay outside the graph (``validate_audio``).
onnx and onnxruntime are optional (``pip install 'avex-hub[export]'``); this module imports them only when used.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fbank import FbankConfig, mel_filterbank

__all__ = ["OPSET", "OPSETS", "META_KEY", "GraphExportError", "need", "dft_frame_basis", "ExportGraph", "RunGraph",
           "example_audio", "write_graph", "quantize_int8", "read_metadata"]

OPSET = 17
# The opsets an export is tested with: 14 is the first that has what the graph needs (the attention), 20 the newest
# torch 2.13's TorchScript exporter supports (it writes up to 23 with a warning that they are not supported);
# tests/test_export.py exports the first and the last.
OPSETS = range(14, 21)
META_KEY = "avex_hub"  # metadata_props key of a written file: JSON


class GraphExportError(RuntimeError):
    """torch could not export the graph, or the file fails a check (nothing was kept)."""


def need(module: str, extra: str = "export"):
    """Import an optional module, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this needs {module}: pip install 'avex-hub[{extra}]'") from error


def dft_frame_basis(config: FbankConfig = FbankConfig()) -> torch.Tensor:
    """``[2 * (n_fft // 2 + 1), window_size]`` float64: frame samples -> real and imaginary DFT parts.

    Row k (and k + bins) applies, in this order, the per-frame DC removal, Kaldi's pre-emphasis (the first
    sample paired with itself), the povey window and the k-th bin of the zero-padded ``n_fft``-point DFT.
    """
    n, bins = config.window_size, config.n_fft // 2 + 1
    eye = torch.eye(n, dtype=torch.float64)
    dc = eye - 1.0 / n  # x - mean(x)
    previous = torch.roll(eye, 1, dims=0)
    previous[0] = eye[0]  # previous[0] = x[0], previous[i] = x[i - 1]
    emphasis = eye - config.preemphasis * previous
    window = torch.hann_window(n, periodic=False, dtype=torch.float64).pow(config.window_exponent)
    frame_map = window[:, None] * (emphasis @ dc)  # [n, n]: frame -> windowed, pre-emphasised frame
    angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64),
                                      torch.arange(n, dtype=torch.float64)) / config.n_fft
    return torch.cat([torch.cos(angle), -torch.sin(angle)]) @ frame_map  # [2 * bins, n]


class ExportGraph(nn.Module):
    """``audio [B, L]`` -> ``(features, embedding[, logits])``: the file ``avex-hub export`` writes. The filterbank
    is the convolution of :func:`dft_frame_basis`; the encoder and the head are the model's own modules."""

    input_names = ("audio",)
    output_names = ("features", "embedding", "logits")

    def __init__(self, model) -> None:
        super().__init__()
        config = model.fbank.config
        self.shift, self.bins = config.window_shift, config.n_fft // 2 + 1
        self.register_buffer("basis", dft_frame_basis(config).float().unsqueeze(1), persistent=False)
        self.register_buffer("mel", mel_filterbank(config).T.contiguous(), persistent=False)  # [bins, mels]
        self.preprocessing = model.preprocessing
        self.backbone = model.backbone
        self.classifier = model.classifier

    def filterbank(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` -> ``[B, T, mels]`` normalised log-mel, as ``AvexModel.preprocess``."""
        p = self.preprocessing
        if p.clip_input:
            audio = audio.clamp(-1.0, 1.0)
        parts = F.conv1d((audio * p.input_scale).unsqueeze(1), self.basis, stride=self.shift)  # [B, 2 * bins, T]
        power = parts[:, : self.bins].square() + parts[:, self.bins:].square()
        energies = power.transpose(1, 2) @ self.mel
        fbank = torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
        return (fbank - p.fbank_mean) / (2 * p.fbank_std)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(self.filterbank(audio)).features
        embedding = features.mean(dim=1)
        if self.classifier is None:
            return features, embedding
        return features, embedding, self.classifier(embedding)


class RunGraph(nn.Module):
    """``fbank [B, T, mels]`` (``AvexModel.preprocess``) and ``frame_mask [B, T]`` (True = padding) ->
    ``embeddings [B, len(layers), C]`` (each of ``layers`` pooled by ``pooling`` over the frames that are not
    padding) and, with ``logits``, ``logits [B, labels]`` (the head on the mean-pooled last layer): the numbers
    ``AvexModel.pooled_layers`` and ``AvexModel.logits`` give. Without ``logits`` the encoder stops at the deepest
    of ``layers``. The filterbank stays outside: a runtime computing in bf16 would round the power spectrum before
    its logarithm (max |error| 0.27 on normalised log-mels, measured under OpenVINO's bf16 hint)."""

    input_names = ("fbank", "frame_mask")

    def __init__(self, model, layers: list[int], pooling: str = "mean", *, logits: bool = False) -> None:
        super().__init__()
        if logits and model.classifier is None:
            raise ValueError(f"{model.name} has no species head: a graph with logits needs one")
        self.backbone, self.classifier, self.pool = model.backbone, model.classifier, model.pool
        self.layers, self.pooling, self.logits = list(layers), pooling, logits
        self.output_names = ("embeddings", "logits") if logits else ("embeddings",)

    def forward(self, fbank: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.backbone(fbank, frame_mask, output_hidden_states=True,
                            num_layers=None if self.logits else max(self.layers), hidden_layers=self.layers)
        pooled = torch.stack([self.pool(out.hidden_states[i], out.padding_mask, self.pooling) for i in self.layers],
                             dim=1)
        if not self.logits:
            return (pooled,)
        return pooled, self.classifier(self.pool(out.features, out.padding_mask, "mean"))


def example_audio(shapes, sample_rate: int, seed: int = 0) -> list[torch.Tensor]:
    """Deterministic tones over faint noise, one ``[batch, samples]`` tensor per ``(batch, seconds)`` of
    ``shapes``: the example traced, and the audio exports are checked on."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch, seconds in shapes:
        t = torch.arange(round(seconds * sample_rate)) / sample_rate
        freqs = torch.rand(batch, 3, 1, generator=generator) * 5000 + 200
        tones = 0.1 * torch.sin(2 * math.pi * freqs * t).sum(1)
        batches.append(tones + 0.01 * torch.randn(batch, t.numel(), generator=generator))
    return batches


def write_graph(graph: ExportGraph | RunGraph, path: str | os.PathLike, metadata: dict, example: tuple, *,
                opset: int = OPSET, name: str = "the model") -> None:
    """Export ``graph`` (traced on the ``example`` inputs) to ``path`` with dynamic batch and length,
    ``metadata`` under :data:`META_KEY`, checked by onnx's checker; a GraphExportError with the exporter's first
    line when torch cannot export it."""
    onnx = need("onnx")
    names = [n for n in graph.output_names if n != "logits" or graph.classifier is not None]  # export: no head
    axes = {name: {0: "batch", 1: "samples" if name == "audio" else "frames"} for name in graph.input_names}
    axes.update({name: {0: "batch", 1: "patches"} if name == "features" else {0: "batch"} for name in names})
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter, on purpose: torch 2.13's torch.export-based one stops at a reshape after
            # attention with a symbolic length (it cannot prove N >= 1). Its deprecation notices (the exporter and its
            # logging helper) are ours to act on, not the user's; only this call is silenced.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(graph.eval(), example, str(path), dynamo=False, opset_version=opset,
                              input_names=list(graph.input_names), output_names=names, dynamic_axes=axes)
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(metadata, ensure_ascii=False)
        onnx.save_model(proto, str(path))
        onnx.checker.check_model(str(path))
    except (RuntimeError, onnx.checker.ValidationError) as error:  # torch.onnx's errors are RuntimeErrors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GraphExportError(f"torch {torch.__version__} could not export {name} at opset {opset}: "
                               f"{first[:300]}") from error


# The weight matrices int8 quantisation may touch: the transformer layers' projections and feed-forward (as
# precision="int8" does in PyTorch). onnxruntime's default also quantises the filterbank's matrix products, which
# ruins the log-mel input (embedding cosine -0.83 measured on the full-size model), so it is never left to choose.
_QUANTIZABLE = re.compile(r"^/backbone/encoder/layers\.\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/MatMul$")


def quantize_int8(path: str | os.PathLike, layers: int) -> None:
    """Quantise the float32 graph at ``path`` in place: int8 dynamic quantisation of the weight matrices of the
    transformer's first ``layers`` layers (the filterbank, patch embedding and heads stay float32); the metadata
    gains ``quantization``."""
    onnx = need("onnx")
    quantization = need("onnxruntime.quantization")
    path = Path(path)
    proto = onnx.load(str(path))
    nodes = [n.name for n in proto.graph.node if n.op_type == "MatMul" and _QUANTIZABLE.match(n.name)]
    if len(nodes) != 6 * layers:
        raise GraphExportError(f"expected {6 * layers} layer matrix products to quantise, found {len(nodes)}")
    meta = read_metadata(path)
    quantized = path.with_name(path.name + ".int8")
    try:
        # quantize_dynamic logs a hint to pre-process the model on the root logger (meant for static calibration;
        # nothing to act on here), so warnings are held back for this call only.
        logging.disable(logging.WARNING)
        try:
            quantization.quantize_dynamic(str(path), str(quantized), nodes_to_quantize=nodes,
                                          weight_type=quantization.QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        proto = onnx.load(str(quantized))
    finally:
        quantized.unlink(missing_ok=True)
    for entry in [e for e in proto.metadata_props if e.key == META_KEY]:
        proto.metadata_props.remove(entry)
    entry = proto.metadata_props.add()
    meta["quantization"] = "int8 dynamic: transformer layer weights; filterbank, patch embedding, heads fp32"
    entry.key, entry.value = META_KEY, json.dumps(meta, ensure_ascii=False)
    onnx.save_model(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict:
    """The :data:`META_KEY` metadata of a written file; FileNotFoundError, or ValueError for a file without it
    (or one onnx cannot read)."""
    onnx = need("onnx")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends: any unreadable file
        raise ValueError(f"{path} is not a readable ONNX file ({type(error).__name__}: {error})") from None
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path} has no {META_KEY!r} metadata; expected a file written by avex-hub export")
