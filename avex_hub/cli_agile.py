"""``avex-hub index|search|label|train-classifier|detect``: agile modelling on a perch-hoplite database.

    avex-hub index recordings/ --db archive/ --hop 5          # resumable: a re-run adds new files only
    avex-hub search --db archive/ --query call.wav:3.5-6 --top 100 --out hits.csv --raven hits/
    avex-hub label --db archive/ hits.csv                     # read the label / label_type columns back
    avex-hub train-classifier --db archive/ --out probe.safetensors
    avex-hub detect --db archive/ --probe probe.safetensors --out detections.csv --raven tables/ --uncertain 50

Needs ``pip install 'avex-hub[agile]'`` (perch-hoplite); see :mod:`avex_hub.integrations.agile`. Exit codes as for
``avex-hub embed``: 0 ok, 1 error, 2 usage (bad arguments, another database's settings), 3 some inputs failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = ("index", "search", "label", "train-classifier", "detect")


def add_parsers(sub, channels_type) -> None:
    """Register the agile subcommands on ``sub`` (the CLI's subparsers); ``channels_type`` parses --channels."""
    from .encoder.model import POOLINGS
    from .encoder.precision import PRECISIONS
    from .hub.weights import WEIGHTS

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=None, choices=sorted(WEIGHTS), metavar="MODEL",
                       help="published model (index default: esp_aves2_sl_beats_all; search: the database's)")
    model.add_argument("--checkpoint", help="local weights: a .safetensors file or a folder with label_map.json")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto, cuda if available)")
    model.add_argument("--no-progress", action="store_true", help="no progress bar")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", required=True, type=Path, help="the embedding database folder")

    index = sub.add_parser("index", parents=[model, db], help="embed a folder tree into a hoplite database")
    index.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders (searched recursively)")
    index.add_argument("--window", type=float, default=None,
                       help="window length in seconds (default: the model's preprocessing.window_s, 10)")
    index.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: the window)")
    index.add_argument("--layer", type=int, default=-1, help="the layer stored (default: -1, the last)")
    index.add_argument("--pooling", choices=POOLINGS, default="mean", help="pooling over frames")
    index.add_argument("--channels", type=channels_type, default="mix",
                       help="'mix' (default), 'all' (one vector per channel) or a channel index")
    index.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32 (default), bf16 (CUDA, or CPUs with bf16 units), int8 (CPU; see README's speed table)")
    index.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: 2 CPU, 64 CUDA)")
    index.add_argument("--workers", type=int, default=None, help="decoding worker processes (default as for embed)")

    search = sub.add_parser("search", parents=[model, db], help="nearest windows to example calls (cosine)")
    search.add_argument("--query", action="append", required=True, metavar="FILE[:START-END]",
                        help="a query clip, optionally the seconds holding the call; repeat for several")
    search.add_argument("--top", type=int, default=100, help="windows to return (default: 100)")
    search.add_argument("--combine", choices=("mean", "max"), default="mean",
                        help="several queries: average (default) or max of their scores")
    search.add_argument("--exact", action="store_true", help="brute force instead of the approximate index")
    search.add_argument("--label", default="", help="prefill the label column of the CSV with this name")
    search.add_argument("--out", required=True, type=Path, help="hits CSV (label it, then `avex-hub label`)")
    search.add_argument("--raven", type=Path, default=None, help="also one Raven selection table per file here")

    label = sub.add_parser("label", parents=[db], help="store the labels filled into a hits CSV")
    label.add_argument("csvs", nargs="+", type=Path, metavar="CSV", help="hits CSVs with label / label_type filled")

    train = sub.add_parser("train-classifier", parents=[db], help="a linear probe on the labelled windows")
    train.add_argument("--out", required=True, type=Path, help="probe file (.safetensors)")
    train.add_argument("--epochs", type=int, default=300, help="full-batch steps (default: 300)")

    detect = sub.add_parser("detect", parents=[db], help="score every window with a probe")
    detect.add_argument("--probe", required=True, type=Path, help="from train-classifier")
    detect.add_argument("--out", required=True, type=Path, help="CSV: every window, one score column per label")
    detect.add_argument("--raven", type=Path, default=None, help="Raven tables of windows at or above --threshold")
    detect.add_argument("--threshold", type=float, default=0.5, help="detection threshold (default: 0.5)")
    detect.add_argument("--uncertain", type=int, default=0, metavar="N",
                        help="also write the N windows nearest the threshold to <out>.uncertain.csv, to label")


def run(args, usage_error) -> int:
    """Run an agile subcommand; ``usage_error`` is the CLI's UsageError class (exit code 2)."""
    try:
        from .integrations import agile
    except ImportError as error:
        raise usage_error(str(error)) from None
    try:
        return {"index": _index, "search": _search, "label": _label, "train-classifier": _train,
                "detect": _detect}[args.command](args, agile)
    except (FileNotFoundError, FileExistsError, ValueError) as error:  # incl. SettingsMismatchError
        raise usage_error(str(error)) from None


def _say(args, message: str) -> None:
    if not getattr(args, "no_progress", False):
        print(f"avex-hub: {message}", file=sys.stderr)


def _model(args, default: str):
    from .hub.loading import ChecksumError, WeightsNotAvailableError, build_model

    try:
        return build_model(args.model or default, checkpoint=args.checkpoint, progress=not args.no_progress)
    except (WeightsNotAvailableError, ChecksumError) as error:
        print(f"avex-hub: error: {error}", file=sys.stderr)
        return None


def _index(args, agile) -> int:
    from .embed import outputs

    if args.batch_size is not None and args.batch_size < 1 or args.workers is not None and args.workers < 0:
        raise ValueError("--batch-size must be >= 1 and --workers >= 0")
    model = _model(args, "esp_aves2_sl_beats_all")
    if model is None:
        return 1
    report = agile.index_files(model, args.paths, args.db, layer=args.layer, pooling=args.pooling,
                               window_s=args.window, hop_s=args.hop, channels=args.channels,
                               precision=args.precision, batch_size=args.batch_size,
                               num_workers=args.workers, device=args.device, progress=not args.no_progress)
    _say(args, f"indexed {len(report.added)} files ({report.windows} windows) in {report.seconds:.1f} s; "
               f"{len(report.skipped)} already in {args.db}")
    failures = args.db / "failures.csv"
    if report.failures:
        outputs.write_failures(failures, report.failures)
        print(f"avex-hub: error: {len(report.failures)} inputs could not be processed (listed in {failures})",
              file=sys.stderr)
        return 3
    failures.unlink(missing_ok=True)
    return 0


def _search(args, agile) -> int:
    archive = agile.Archive.open(args.db, readonly=True)
    queries = [agile.parse_query(q) for q in args.query]
    model = _model(args, archive.settings["model"])
    if model is None:
        return 1
    hits = agile.search(archive, model, queries, top=args.top, combine=args.combine, exact=args.exact,
                        device=args.device)
    agile.write_hits_csv(hits, args.out, label=args.label)
    if args.raven is not None:
        agile.write_hits_raven(hits, args.raven, name=args.label or "query")
    _say(args, f"wrote {len(hits)} hits to {args.out}")
    return 0


def _label(args, agile) -> int:
    archive = agile.Archive.open(args.db)
    count = sum(agile.add_labels_csv(archive, path) for path in args.csvs)
    print(f"avex-hub: stored {count} labels in {args.db}", file=sys.stderr)
    return 0


def _train(args, agile) -> int:
    archive = agile.Archive.open(args.db, readonly=True)
    path = agile.train_classifier(archive, args.out, epochs=args.epochs)
    print(f"avex-hub: wrote {path}", file=sys.stderr)
    return 0


def _detect(args, agile) -> int:
    archive = agile.Archive.open(args.db, readonly=True)
    detections = agile.detect(archive, args.probe, threshold=args.threshold)
    detections.to_csv(args.out)
    if args.raven is not None:
        detections.to_raven(args.raven)
    if args.uncertain:
        target = args.out.with_suffix(".uncertain.csv")
        agile.write_hits_csv(detections.uncertain(args.uncertain), target, label=detections.labels[0])
        print(f"avex-hub: wrote the {args.uncertain} windows nearest the threshold to {target} (label them, then "
              "`avex-hub label`)", file=sys.stderr)
    above = int((detections.scores.max(1) >= args.threshold).sum()) if len(detections.scores) else 0
    print(f"avex-hub: scored {len(detections.scores)} windows, {above} at or above {args.threshold}", file=sys.stderr)
    return 0
