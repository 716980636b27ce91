"""A portable ONNX export: 16 kHz float audio in, frame features, pooled embedding and logits out.

    avex-hub export esp_aves2_sl_beats_all --format onnx --out model.onnx
    avex-hub export esp_aves2_sl_beats_all --checkpoint my-finetune/ --out finetune.onnx

The exported graph is the whole path the PyTorch model runs, with dynamic batch and length:

* input ``audio``: float32 ``[batch, samples]``, mono, 16 kHz, in [-1, 1], at least ``MIN_SAMPLES``
  samples, every row the same length (no padding mask: export clips of equal length, or one at a time);
* outputs ``features`` ``[batch, patches, C]`` (last layer), ``embedding`` ``[batch, C]`` (their mean)
  and, for models with a species head, ``logits`` ``[batch, labels]`` (sigmoid gives the scores).

Two things differ from the PyTorch forward on purpose. Input checks (``validate_audio``: rank, length,
NaN) stay outside the graph; a runtime has its own and data-dependent checks do not export. The
filterbank's framing, DC removal, pre-emphasis, window and 512-point real DFT are one linear map of each
400-sample frame, so they become a single strided convolution with a precomputed basis instead of an FFT:
ONNX's ``DFT`` operator needs opset 20 and is not run correctly by every runtime, a convolution is.

The file is validated on export against the PyTorch model with onnxruntime (``max|Δ|`` of every output,
``tolerance`` 1e-3 by default, see ``TOLERANCE``) and only then moved to ``out`` (atomically). Its metadata (key
``avex_hub``) holds the weights digest, the architecture digest, the preprocessing contract, the label
names and the input/output contract, as a probe file does; read it with :func:`read_onnx_metadata`.
onnx and onnxruntime come with ``pip install 'avex-hub[export]'``.
"""

from __future__ import annotations

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

from ..audio.arrays import SAMPLE_RATE
from ..encoder.fbank import FbankConfig, mel_filterbank
from ..encoder.model import MIN_SAMPLES, AvexModel

__all__ = ["ONNX_META_KEY", "OPSET", "OPSETS", "OnnxExportError", "ExportGraph", "dft_frame_basis", "export_onnx",
           "check_export_request", "read_onnx_metadata", "check_onnx"]

ONNX_META_KEY = "avex_hub"  # metadata_props key of an exported file: JSON (see export_metadata)
FORMAT_VERSION = 1
OPSET = 17
# The opsets an export is tested with: 14 is the first that has what the graph needs (the attention), 20 the newest
# torch 2.13's TorchScript exporter supports (it writes up to 23 with a warning that they are not supported);
# tests/test_export.py exports the first and the last.
OPSETS = range(14, 21)
# Accepted max|Δ| of any output on export. The convolution filterbank is closer to a float64 filterbank than
# torch's float32 FFT is (9e-6 against 5e-5 on normalised log-mels); 12 full-size layers turn the FFT's rounding
# into ~1.3e-4 on the frame features (1e-6 on the embedding), so the bound leaves that headroom. The beats-tiny
# fixture stays within 1e-4 (tests/test_export.py).
TOLERANCE = 1e-3


class OnnxExportError(RuntimeError):
    """The export failed: torch could not export the model, or the exported file does not reproduce the PyTorch
    model within the tolerance (nothing was written)."""


def check_export_request(out: str | os.PathLike, *, opset: int = OPSET, tolerance: float = TOLERANCE) -> Path:
    """``out`` as a Path, once everything that can be refused before the work has been checked: a ValueError that
    says what to change for an ``out`` that is a folder or cannot be written (its folder is made if missing), an
    ``opset`` outside :data:`OPSETS`, or a ``tolerance`` that is not a number >= 0."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset must be one of {OPSETS.start}..{OPSETS.stop - 1} (the graph needs opset "
                         f"{OPSETS.start}; {OPSETS.stop - 1} is the newest torch's exporter supports), got {opset!r}; "
                         f"the default is {OPSET}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a number >= 0 (the largest max|Δ| to PyTorch accepted), got "
                         f"{tolerance!r}; the default is {TOLERANCE}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"the output {out} is a folder; give a file name such as {out / 'model.onnx'}")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ValueError(f"cannot write {out}: {above} is a file, not a folder; choose another output path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.{os.getpid()}.write-test"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write {out} ({error.strerror or error}); choose a folder you can write to") from None
    return out


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"ONNX export needs {module}: pip install 'avex-hub[export]' "
                          f"(onnx, onnxruntime)") from error


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
    """What is exported: ``audio [B, L]`` -> ``(features, embedding[, logits])``, no input checks.

    The encoder, head and normalisation are the model's own modules; the filterbank is the convolution
    form of :class:`~avex_hub.encoder.fbank.KaldiFbank` (:func:`dft_frame_basis`).
    """

    def __init__(self, model: AvexModel) -> None:
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


def output_names(model: AvexModel) -> list[str]:
    return ["features", "embedding"] + (["logits"] if model.classifier is not None else [])


def export_metadata(model: AvexModel, opset: int) -> dict:
    """The ``avex_hub`` metadata of an exported file: provenance plus the input/output contract."""
    from .._version import __version__
    from ..hub.provenance import architecture, config_digest

    return {
        "format": "avex_hub.onnx", "format_version": FORMAT_VERSION, "model": model.name,
        "weights_sha256": model.weights_sha256, "config_sha256": config_digest(model.config),
        "config": architecture(model.config), "preprocessing": model.preprocessing.to_dict(),
        "label_names": list(model.labels) or None, "opset": opset, "avex_hub_version": __version__,
        "inputs": {"audio": f"float32 [batch, samples], mono {model.sample_rate} Hz in [-1, 1], "
                            f"samples >= {MIN_SAMPLES}, no NaN (not checked in the graph)"},
        "outputs": {"features": "[batch, patches, dim] last layer", "embedding": "[batch, dim] mean of features",
                    **({"logits": "[batch, labels] (sigmoid -> scores)"} if model.classifier is not None else {})},
    }


def validation_audio(sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """Deterministic test batches of two lengths and batch sizes (the dynamic axes are exercised)."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for batch, seconds in ((2, 3.0), (1, 1.37)):
        t = torch.arange(round(seconds * sample_rate)) / sample_rate
        freqs = torch.rand(batch, 3, 1, generator=generator) * 5000 + 200
        tones = 0.1 * torch.sin(2 * math.pi * freqs * t).sum(1)
        batches.append(tones + 0.01 * torch.randn(batch, t.numel(), generator=generator))
    return batches


def check_onnx(path: str | os.PathLike, model: AvexModel, audio: list[torch.Tensor] | None = None, *,
               cosine: bool = False) -> dict[str, float]:
    """Largest ``|onnx - torch|`` of each output over ``audio`` batches (default :func:`validation_audio`),
    and with ``cosine`` the smallest cosine of the pooled embeddings as ``embedding_cosine``."""
    ort = _need("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = output_names(model)
    worst = dict.fromkeys(names, 0.0)
    graph = ExportGraph(model).eval()
    for batch in audio if audio is not None else validation_audio(model.sample_rate):
        with torch.inference_mode():
            out = model.encode(batch)  # the PyTorch model itself, FFT filterbank and all
            expected = {"features": out.features, "embedding": out.features.mean(dim=1)}
            if graph.classifier is not None:
                expected["logits"] = model.classifier(expected["embedding"])
        got = session.run(names, {"audio": batch.float().numpy()})
        for name, value in zip(names, got):
            worst[name] = max(worst[name], float((torch.from_numpy(value) - expected[name]).abs().max()))
        if cosine:
            similarity = F.cosine_similarity(torch.from_numpy(got[1]), expected["embedding"]).min()
            worst["embedding_cosine"] = min(worst.get("embedding_cosine", 1.0), float(similarity))
    return worst


def _export_graph(model: AvexModel, path: Path, opset: int) -> None:
    """Write ``model``'s :class:`ExportGraph` to ``path`` with its metadata, checked by onnx's checker; an
    OnnxExportError with the exporter's first line when torch cannot export it."""
    onnx = _need("onnx")
    names = output_names(model)
    axes = {"audio": {0: "batch", 1: "samples"}, "features": {0: "batch", 1: "patches"},
            **{name: {0: "batch"} for name in names[1:]}}
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter, on purpose: torch 2.13's torch.export-based one stops at a reshape after
            # attention with a symbolic length (it cannot prove N >= 1). Its deprecation notices (the exporter and its
            # logging helper) are ours to act on, not the user's; only this call is silenced.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(ExportGraph(model).eval(), (validation_audio(model.sample_rate)[0],), str(path),
                              dynamo=False, opset_version=opset, input_names=["audio"], output_names=names,
                              dynamic_axes=axes)
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(export_metadata(model, opset), ensure_ascii=False)
        onnx.save_model(proto, str(path))
        onnx.checker.check_model(str(path))
    except (RuntimeError, onnx.checker.ValidationError) as error:  # torch.onnx's errors are RuntimeErrors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OnnxExportError(f"torch {torch.__version__} could not export {model.name} at opset {opset}: "
                              f"{first[:300]}; nothing was written") from error


def export_onnx(model: AvexModel, out: str | os.PathLike, *, opset: int = OPSET, tolerance: float = TOLERANCE,
                quantize: str | None = None) -> dict[str, float]:
    """Export ``model`` to ``out`` (ONNX), validate it with onnxruntime and return each output's max|Δ|.

    ``quantize="int8"`` quantises the transformer layers' weight matrices dynamically (onnxruntime's
    ``quantize_dynamic``; the filterbank, patch embedding and heads stay fp32) and validates by the pooled
    embedding's cosine to PyTorch fp32 (at least ``INT8_MIN_COSINE``) instead of ``tolerance``.
    Raises OnnxExportError (and writes nothing) when the file does not reproduce PyTorch.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    out = check_export_request(out, opset=opset, tolerance=tolerance)
    _need("onnx"), _need("onnxruntime")  # the validation runs onnxruntime: without it, nothing is exported
    from ..embed.outputs import atomic_path

    model = model.cpu().eval()
    with atomic_path(out, ".onnx") as tmp:
        _export_graph(model, tmp, opset)
        if quantize == "int8":
            return _quantize_int8(tmp, model, out, export_metadata(model, opset))
        worst = check_onnx(tmp, model)
        bad = {k: v for k, v in worst.items() if not v <= tolerance}
        if bad:
            raise OnnxExportError(f"the exported graph differs from PyTorch by {bad} (max|Δ|), more than "
                                  f"tolerance={tolerance}; nothing was written to {out}")
    return worst


# The weight matrices int8 quantisation may touch: the transformer layers' projections and feed-forward (as
# precision="int8" does in PyTorch). onnxruntime's default also quantises the filterbank's matrix products, which
# ruins the log-mel input (embedding cosine -0.83 measured on the full-size model), so it is never left to choose.
_QUANTIZABLE = re.compile(r"^/backbone/encoder/layers\.\d+/(self_attn/(q|k|v|out)_proj|fc1|fc2)/MatMul$")
INT8_MIN_COSINE = 0.999  # accepted pooled-embedding cosine of an int8 export to PyTorch fp32 (measured: see README)


def _quantize_int8(path: Path, model: AvexModel, out, meta: dict) -> dict[str, float]:
    """Quantise the fp32 export at ``path`` in place; returns max|Δ| per output plus ``embedding_cosine``."""
    onnx = _need("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(path))
    nodes = [n.name for n in proto.graph.node if n.op_type == "MatMul" and _QUANTIZABLE.match(n.name)]
    if len(nodes) != 6 * model.num_layers:
        raise OnnxExportError(f"expected {6 * model.num_layers} layer matrix products to quantise, found {len(nodes)}")
    quantized = path.with_name(path.name + ".int8")
    try:
        # quantize_dynamic logs a hint to pre-process the model on the root logger (meant for static calibration;
        # nothing to act on here), so warnings are held back for this call only.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(path), str(quantized), nodes_to_quantize=nodes, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        proto = onnx.load(str(quantized))
    finally:
        quantized.unlink(missing_ok=True)
    for entry in [e for e in proto.metadata_props if e.key == ONNX_META_KEY]:
        proto.metadata_props.remove(entry)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps({**meta, "quantization": "int8 dynamic: transformer layer "
                                                        "weights; filterbank, patch embedding, heads fp32"})
    onnx.save_model(proto, str(path))
    worst = check_onnx(path, model, cosine=True)
    if not worst["embedding_cosine"] >= INT8_MIN_COSINE:
        raise OnnxExportError(f"the int8 export's pooled embedding has cosine {worst['embedding_cosine']:.5f} to "
                              f"PyTorch fp32, below {INT8_MIN_COSINE}; nothing was written to {out}")
    return worst


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """The ``avex_hub`` metadata of an exported file (weights digest, contract, labels)."""
    onnx = _need("onnx")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == ONNX_META_KEY:
            return json.loads(entry.value)
    raise ValueError(f"{path} has no {ONNX_META_KEY!r} metadata; expected a file written by avex-hub export")


# -- the command line: avex-hub export (registered by avex_hub.cli) -------------------------------------------------
def add_export_arguments(parser) -> None:
    from ..hub.weights import WEIGHTS

    parser.add_argument("model", choices=sorted(WEIGHTS), metavar="MODEL", help="published model (see `avex-hub info`)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    parser.add_argument("--out", required=True, type=Path, help="output file, e.g. model.onnx")
    parser.add_argument("--checkpoint", help="local weights: a .safetensors file or a folder with label_map.json "
                                             "(a fine-tune exported by avex-hub)")
    parser.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest max|Δ| against PyTorch accepted on export (default: %(default)s)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8: dynamically quantised transformer weights (smaller, faster on CPUs without "
                             "bf16 units); validated by embedding cosine >= %s" % INT8_MIN_COSINE)
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")


def run_export(args) -> int:
    """``avex-hub export``: 0 written and validated; 1 weights unavailable or unreadable, or the export failed (torch
    could not export the model, validation failed, a write error such as a full disk: nothing was written); 2 usage
    error (an --out that is a folder or cannot be written, an --opset outside 14..20, a negative --tolerance, a bad
    --checkpoint, onnx or onnxruntime missing), found before any work. Every failure is one line on stderr."""
    import sys

    from ..hub.loading import ChecksumError, WeightsNotAvailableError, build_model

    def error(message: str, code: int) -> int:
        print(f"avex-hub: error: {message}", file=sys.stderr)
        return code

    try:
        out = check_export_request(args.out, opset=args.opset, tolerance=args.tolerance)
        _need("onnx"), _need("onnxruntime")
    except ValueError as failure:
        return error(f"{failure}", 2)
    except ImportError as failure:
        return error(str(failure), 2)
    try:
        model = build_model(args.model, checkpoint=args.checkpoint, progress=not args.no_progress)
    except (WeightsNotAvailableError, ChecksumError) as failure:
        return error(str(failure), 1)
    except (FileNotFoundError, ValueError) as failure:  # a bad --checkpoint
        return error(str(failure), 2)
    except OSError as failure:  # a cached or given weights path that is a folder, unreadable, ...
        return error(f"cannot read the weights at {failure.filename or args.checkpoint or args.model} "
                     f"({failure.strerror or failure})", 1)
    try:
        worst = export_onnx(model, out, opset=args.opset, tolerance=args.tolerance, quantize=args.quantize)
    except OnnxExportError as failure:
        return error(str(failure), 1)
    except OSError as failure:  # a full disk, a folder gone mid-way: the temporary file is removed
        where = f" writing {failure.filename}" if failure.filename else ""
        return error(f"{failure.strerror or failure}{where}; nothing was written to {out}", 1)
    deltas = ", ".join(f"{name} {value:.1e}" for name, value in worst.items())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); onnxruntime vs PyTorch max|Δ|: {deltas}")
    return 0
