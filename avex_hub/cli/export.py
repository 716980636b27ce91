"""``avex-hub export MODEL --out model.onnx``: the model as one ONNX file, validated against PyTorch before it is
written (:mod:`avex_hub.integrations.onnx_export`).

    avex-hub export esp_aves2_sl_beats_all --format onnx --out model.onnx
    avex-hub export esp_aves2_sl_beats_all --checkpoint my-finetune/ --out finetune.onnx --quantize int8

Exit codes: 0 written and validated; 1 weights unavailable or unreadable, or the export failed (torch could not
export the model, validation failed, a write error such as a full disk: nothing was written); 2 usage error (an
--out that is a folder or cannot be written, an --opset outside 14..20, a negative --tolerance, a bad --checkpoint,
onnx or onnxruntime missing), found before any work. Every failure is one line on stderr.
"""

from __future__ import annotations

from . import options
from .errors import CommandError, ExitCode, UsageError
from .model import load_model

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("export",)


def add_parsers(sub) -> None:
    """Register export on ``sub`` (the CLI's subparsers)."""
    from ..hub.weights import WEIGHTS
    from ..integrations.onnx_export import INT8_MIN_COSINE, OPSET, OPSETS, TOLERANCE

    parser = sub.add_parser("export", help="the model as one ONNX file (audio -> features, logits)")
    parser.add_argument("model", choices=sorted(WEIGHTS), metavar="MODEL", help="published model (see `avex-hub info`)")
    options.add(parser, "--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    options.add(parser, "--out", help="output file, e.g. model.onnx")
    options.add(parser, "--checkpoint", help="local weights: a .safetensors file or a folder with label_map.json "
                                             "(a fine-tune exported by avex-hub)")
    parser.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest max|Δ| against PyTorch accepted on export (default: %(default)s)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8: dynamically quantised transformer weights (smaller, faster on CPUs without "
                             "bf16 units); validated by embedding cosine >= %s" % INT8_MIN_COSINE)
    options.add(parser, "--no-progress", help="no download progress bar")


def run(args) -> int:
    """Check the request, load the model, export and validate it; see the module's exit codes."""
    from ..integrations.onnx_export import OnnxExportError, check_export_packages, check_export_request, export_onnx

    try:
        out = check_export_request(args.out, opset=args.opset, tolerance=args.tolerance)
        check_export_packages()
    except (ValueError, ImportError) as failure:
        raise UsageError(str(failure)) from None
    model = load_model(args)
    try:
        worst = export_onnx(model, out, opset=args.opset, tolerance=args.tolerance, quantize=args.quantize)
    except OnnxExportError as failure:
        raise CommandError(str(failure)) from None
    except OSError as failure:  # a full disk, a folder gone mid-way: the temporary file is removed
        where = f" writing {failure.filename}" if failure.filename else ""
        raise CommandError(f"{failure.strerror or failure}{where}; nothing was written to {out}") from None
    deltas = ", ".join(f"{name} {value:.1e}" for name, value in worst.items())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); onnxruntime vs PyTorch max|Δ|: {deltas}")
    return ExitCode.OK
