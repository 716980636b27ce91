"""A portable ONNX export: 16 kHz float audio in, frame features, pooled embedding and logits out.

    avex-hub export esp_aves2_sl_beats_all --format onnx --out model.onnx
    avex-hub export esp_aves2_sl_beats_all --checkpoint my-finetune/ --out finetune.onnx

The exported graph is the whole path the PyTorch model runs, with dynamic batch and length:

* input ``audio``: float32 ``[batch, samples]``, mono, 16 kHz, in [-1, 1], at least ``MIN_SAMPLES``
  samples, every row the same length (no padding mask: export clips of equal length, or one at a time);
* outputs ``features`` ``[batch, patches, C]`` (last layer), ``embedding`` ``[batch, C]`` (their mean)
  and, for models with a species head, ``logits`` ``[batch, labels]`` (sigmoid gives the scores).

Two things differ from the PyTorch forward on purpose (:mod:`avex_hub.encoder.onnx_graph`, which also makes
the graphs ``--runtime onnxruntime|openvino`` runs): input checks (``validate_audio``: rank, length, NaN) stay
outside the graph, and the filterbank is a strided convolution with a precomputed DFT basis instead of an FFT.

The file is validated on export against the PyTorch model with onnxruntime (``max|Δ|`` of every output,
``tolerance`` 1e-3 by default, see ``TOLERANCE``) and only then moved to ``out`` (atomically). Its metadata (key
``avex_hub``) holds the weights digest, the architecture digest, the preprocessing contract, the label
names and the input/output contract, as a probe file does; read it with :func:`read_onnx_metadata`.
onnx and onnxruntime come with ``pip install 'avex-hub[export]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..audio.arrays import SAMPLE_RATE
from ..encoder.model import MIN_SAMPLES, AvexModel
from ..encoder.onnx_graph import (
    META_KEY, OPSET, OPSETS, ExportGraph, GraphExportError, dft_frame_basis, example_audio, need, quantize_int8,
    read_metadata, write_graph,
)

__all__ = ["ONNX_META_KEY", "OPSET", "OPSETS", "OnnxExportError", "ExportGraph", "dft_frame_basis", "export_onnx",
           "check_export_request", "check_export_packages", "read_onnx_metadata", "check_onnx", "INT8_MIN_COSINE"]

ONNX_META_KEY = META_KEY  # metadata_props key of an exported file: JSON (see export_metadata)
FORMAT_VERSION = 1
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
    return example_audio(((2, 3.0), (1, 1.37)), sample_rate)


def check_onnx(path: str | os.PathLike, model: AvexModel, audio: list[torch.Tensor] | None = None, *,
               cosine: bool = False) -> dict[str, float]:
    """Largest ``|onnx - torch|`` of each output over ``audio`` batches (default :func:`validation_audio`),
    and with ``cosine`` the smallest cosine of the pooled embeddings as ``embedding_cosine``."""
    ort = need("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = output_names(model)
    worst = dict.fromkeys(names, 0.0)
    for batch in audio if audio is not None else validation_audio(model.sample_rate):
        with torch.inference_mode():
            out = model.encode(batch)  # the PyTorch model itself, FFT filterbank and all
            expected = {"features": out.features, "embedding": out.features.mean(dim=1)}
            if model.classifier is not None:
                expected["logits"] = model.classifier(expected["embedding"])
        got = session.run(names, {"audio": batch.float().numpy()})
        for name, value in zip(names, got):
            worst[name] = max(worst[name], float((torch.from_numpy(value) - expected[name]).abs().max()))
        if cosine:
            similarity = F.cosine_similarity(torch.from_numpy(got[1]), expected["embedding"]).min()
            worst["embedding_cosine"] = min(worst.get("embedding_cosine", 1.0), float(similarity))
    return worst


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
    need("onnx"), need("onnxruntime")  # the validation runs onnxruntime: without it, nothing is exported
    from ..embed.outputs import atomic_path

    model = model.cpu().eval()
    with atomic_path(out, ".onnx") as tmp:
        try:
            example = (validation_audio(model.sample_rate)[0],)
            write_graph(ExportGraph(model), tmp, export_metadata(model, opset), example, opset=opset, name=model.name)
        except GraphExportError as error:
            raise OnnxExportError(f"{error}; nothing was written to {out}") from error
        if quantize == "int8":
            return _quantize_int8(tmp, model, out)
        worst = check_onnx(tmp, model)
        bad = {k: v for k, v in worst.items() if not v <= tolerance}
        if bad:
            raise OnnxExportError(f"the exported graph differs from PyTorch by {bad} (max|Δ|), more than "
                                  f"tolerance={tolerance}; nothing was written to {out}")
    return worst


INT8_MIN_COSINE = 0.999  # accepted pooled-embedding cosine of an int8 export to PyTorch fp32 (measured: see README)


def _quantize_int8(path: Path, model: AvexModel, out) -> dict[str, float]:
    """Quantise the fp32 export at ``path`` in place (:func:`~avex_hub.encoder.onnx_graph.quantize_int8`); returns
    max|Δ| per output plus ``embedding_cosine``."""
    try:
        quantize_int8(path, model.num_layers)
    except GraphExportError as error:
        raise OnnxExportError(f"{error}; nothing was written to {out}") from error
    worst = check_onnx(path, model, cosine=True)
    if not worst["embedding_cosine"] >= INT8_MIN_COSINE:
        raise OnnxExportError(f"the int8 export's pooled embedding has cosine {worst['embedding_cosine']:.5f} to "
                              f"PyTorch fp32, below {INT8_MIN_COSINE}; nothing was written to {out}")
    return worst


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """The ``avex_hub`` metadata of an exported file (weights digest, contract, labels)."""
    return read_metadata(path)


def check_export_packages() -> None:
    """ImportError naming the extra to install when onnx or onnxruntime (which the validation runs) is missing."""
    need("onnx"), need("onnxruntime")
