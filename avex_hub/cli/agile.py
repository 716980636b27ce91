"""``avex-hub index|search|label|train-classifier|detect|prune|export-labels|import-labels``: agile modelling on a
perch-hoplite database.

    avex-hub index recordings/ --db archive/ --hop 5          # resumable: a re-run adds new files only
    avex-hub search --db archive/ --query call.wav:3.5-6 --top 100 --out hits.csv --raven hits/
    avex-hub label --db archive/ hits.csv                     # read the label / label_type columns back
    avex-hub train-classifier --db archive/ --out probe.safetensors
    avex-hub detect --db archive/ --probe probe.safetensors --out detections.csv --raven tables/ --uncertain 50
    avex-hub export-labels --db archive/ --out labels.csv     # every label, to keep or to import elsewhere
    avex-hub import-labels --db other/ labels.csv
    avex-hub prune --db archive/                              # drop recordings whose audio is gone (labels kept aside)

Needs ``pip install 'avex-hub[agile]'`` (perch-hoplite); see :mod:`avex_hub.integrations.agile`. Every failure is
one line and an exit code: 0 ok; 1 an error stopped the command (an archive file damaged or cut short, a schema
newer than this avex-hub, weights unavailable, a write that failed, a runtime's graph that could not be exported);
2 usage (bad arguments or numbers, an --out or --raven that cannot be written, a labels file refused, another
database's settings, a --runtime whose package is missing: checked before any work where they can be); 3 some
inputs failed (index; listed in ``<db>/failures.csv``); 4 the archive is being written by another process (named,
with the age of its lock; nothing was changed: run again when it ends); 130 interrupted.
What opening or writing an archive found and did (an upgrade, a repair, a lock taken over, missing audio) is
printed as ``avex-hub: ...`` lines.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .._files import check_writable
from . import options, terminal
from .errors import CommandError, ExitCode, UsageError
from .model import load_model, runtime_device
from .options import at_least_zero, positive_int

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("index", "search", "label", "train-classifier", "detect", "prune", "export-labels", "import-labels")


# -- the parsers ------------------------------------------------------------------------------------------------------
def add_parsers(sub) -> None:
    """Register the agile subcommands on ``sub`` (the CLI's subparsers)."""
    model = options.parent("--checkpoint", "--device", "--no-progress")
    options.add(model, "--model", default=None,
                help="published model (index default: esp_aves2_sl_beats_all; search: the database's)")
    db = options.parent("--db")

    # allow_abbrev=False, as for embed: an option is its full name (--layer would otherwise quietly mean --layers);
    # --deployments, --time-pattern and --timezone: how recording starts and sites are read, as the monitoring commands
    where = options.parent("--deployments", "--time-pattern", "--timezone")
    index = sub.add_parser("index", parents=[model, db, where], allow_abbrev=False,
                           help="embed a folder tree into a hoplite database")
    index.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders (searched recursively)")
    for name in ("--window", "--hop", "--pooling", "--channels", "--precision", "--threads", "--batch-size",
                 "--workers"):
        options.add(index, name)
    options.add(index, "--runtime", help="what runs the encoder, as for embed (the archive keeps one runtime's "
                                         "vectors; search embeds its queries with it)")
    options.add(index, "--layers", help="the layer stored, one index (default: -1, the last; 0 the encoder input)")

    search = sub.add_parser("search", parents=[model, db], help="nearest windows to example calls (cosine)")
    search.add_argument("--query", action="append", required=True, metavar="FILE[:START-END]",
                        help="a query clip, optionally the seconds holding the call; repeat for several")
    search.add_argument("--top", type=positive_int, default=100, help="windows to return (default: 100)")
    search.add_argument("--combine", choices=("mean", "max"), default="mean",
                        help="several queries: average (default) or max of their scores")
    search.add_argument("--exact", action="store_true", help="brute force instead of the approximate index")
    search.add_argument("--label", default="", help="prefill the label column of the CSV with this name")
    options.add(search, "--out", help="hits CSV (label it, then `avex-hub label`)")
    options.add(search, "--raven")

    label = sub.add_parser("label", parents=[db], help="store the labels filled into a hits CSV")
    label.add_argument("csvs", nargs="+", type=Path, metavar="CSV", help="hits CSVs with label / label_type filled")

    train = sub.add_parser("train-classifier", parents=[db], help="a linear probe on the labelled windows")
    options.add(train, "--out", help="probe file (.safetensors)")
    options.add(train, "--epochs", default=300, help="full-batch steps (default: 300)")

    detect = sub.add_parser("detect", parents=[db], help="score every window with a probe")
    options.add(detect, "--probe", required=True, help="from train-classifier")
    options.add(detect, "--out", help="CSV: every window, one score column per label")
    options.add(detect, "--raven", help="Raven tables of windows at or above --threshold")
    options.add(detect, "--threshold", default=0.5, help="detection threshold (default: 0.5)")
    detect.add_argument("--uncertain", type=at_least_zero, default=0, metavar="N",
                        help="also write the N unlabelled windows nearest the threshold to <out>.uncertain.csv, "
                             "to label")
    detect.add_argument("--include-labelled", action="store_true",
                        help="--uncertain: offer windows that carry a label already too")

    prune = sub.add_parser("prune", parents=[db], help="remove recordings whose audio is gone (labels kept aside)")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    export = sub.add_parser("export-labels", parents=[db], help="every label of the archive as a CSV")
    options.add(export, "--out", help="labels CSV (import it with import-labels)")

    imports = sub.add_parser("import-labels", parents=[db], help="store the labels of an export-labels CSV")
    imports.add_argument("csvs", nargs="+", type=Path, metavar="CSV", help="files written by export-labels")


# -- running them -----------------------------------------------------------------------------------------------------
def run(args) -> int:
    """Run an agile subcommand; what stops it is a CommandError (its exit code) or a UsageError (2)."""
    try:
        from ..integrations import agile
    except ImportError as error:
        raise UsageError(str(error)) from None
    from ..encoder.onnx_graph import GraphExportError

    handlers = {"index": _index, "search": _search, "label": _label, "train-classifier": _train,
                "detect": _detect, "prune": _prune, "export-labels": _export, "import-labels": _import}
    with terminal.warnings_as_lines(agile.ArchiveNotice):
        try:
            return handlers[args.command](args, agile)
        except agile.ArchiveLockedError as error:
            raise CommandError(str(error), ExitCode.BUSY) from None
        except (agile.ArchiveError, agile.SchemaError) as error:
            raise CommandError(str(error)) from None
        except sqlite3.DatabaseError as error:
            raise CommandError(f"{args.db}: the database cannot be read or written ({type(error).__name__}: "
                               f"{error})") from None
        except GraphExportError as error:  # --runtime onnxruntime or openvino (index, or search on such an archive)
            raise CommandError(f"{error}; nothing was computed (--runtime torch runs without a graph)") from None
        except (FileNotFoundError, FileExistsError, ValueError) as error:  # incl. SettingsMismatchError
            raise UsageError(str(error)) from None
        except ImportError as error:  # a runtime's package missing (its message names the extra)
            raise UsageError(str(error)) from None
        except OSError as error:
            where = f" {error.filename}" if error.filename else ""
            raise CommandError(f"cannot read or write{where} ({error.strerror or error})") from None


def _writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """ValueError (usage) before any work when ``path`` cannot be written: a folder given for a file (or the
    reverse), or a folder we may not create files in."""
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; {flag} takes a folder")
    if not folder and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    check_writable(path if folder else path.parent, flag)


def _index(args, agile) -> int:
    from ..embed import outputs
    from .monitoring import say_unknown_starts

    layer = _one_layer(args.layers)
    device = runtime_device(args)  # before the weights load
    model = load_model(args, args.model or options.DEFAULT_MODEL)
    report = agile.index_files(model, args.paths, args.db, layer=layer, pooling=args.pooling,
                               window_s=args.window, hop_s=args.hop, channels=args.channels,
                               precision=args.precision, batch_size=args.batch_size,
                               num_workers=args.workers, device=device, progress=not args.no_progress,
                               checkpoint=args.checkpoint, time_pattern=args.time_pattern,
                               timezone=args.timezone, deployments=args.deployments, runtime=args.runtime,
                               threads=args.threads)
    say_unknown_starts(report.unknown_starts, len(report.added) + len(report.skipped) + len(report.failures))
    terminal.say(f"indexed {len(report.added)} files ({report.windows} windows) in {report.seconds:.1f} s; "
                 f"{len(report.skipped)} already in {args.db}")
    if report.changed:
        terminal.say(f"{len(report.changed)} files had changed since they were indexed (e.g. {report.changed[0]}): "
                     "embedded again, their labels kept")
    failures = args.db / "failures.csv"
    if report.failures:
        outputs.write_failures(failures, report.failures)
        terminal.error(f"{len(report.failures)} inputs could not be processed (listed in {failures})")
        return ExitCode.PARTIAL
    failures.unlink(missing_ok=True)
    return ExitCode.OK


def _one_layer(layers) -> int:
    """index stores one layer per window: --layers N, or 'last' (-1)."""
    if layers == "last":
        return -1
    if isinstance(layers, int):
        return layers
    given = ",".join(map(str, layers)) if isinstance(layers, list) else layers
    raise ValueError(f"--layers {given}: index stores one layer per window; give one layer index, e.g. --layers 6 "
                     "(-1 is the last)")


def _search_model(args, archive):
    """The model the archive was built with: --checkpoint, else the weights it remembers (when their digest still
    matches), else the published model from the Hub (when the archive was built with it)."""
    from ..hub.loading import sha256_file
    from ..hub.weights import get_weights

    name, digest = args.model or archive.settings["model"], archive.settings["weights_sha256"]
    if args.checkpoint or digest == get_weights(name).sha256:
        return load_model(args, name)
    remembered = archive.weights.get("path")
    if remembered and os.path.isfile(remembered):
        now = sha256_file(remembered)
        if now == digest:
            terminal.say(f"using the weights at {remembered}, which made this archive (sha256 {digest[:12]}...)")
            return load_model(args, name, checkpoint=remembered)
        raise ValueError(f"{args.db} was built with local weights (sha256 {digest}); the file it remembers, "
                         f"{remembered}, has changed since (sha256 {now}): pass --checkpoint with the weights the "
                         "archive was built with")
    where = f"; they were at {remembered}, which is gone" if remembered else ""
    raise ValueError(f"{args.db} was built with local weights (sha256 {digest}), not the published {name}{where}: "
                     "pass --checkpoint with those weights")


def _search(args, agile) -> int:
    _writable(args.out, "--out")
    if args.raven is not None:
        _writable(args.raven, "--raven", folder=True)
    archive = agile.Archive.open(args.db, readonly=True)
    queries = [agile.parse_query(q) for q in args.query]
    model = _search_model(args, archive)
    hits = agile.search(archive, model, queries, top=args.top, combine=args.combine, exact=args.exact,
                        device=args.device)
    agile.write_hits_csv(hits, args.out, label=args.label)
    if args.raven is not None:
        agile.write_hits_raven(hits, args.raven, name=args.label or "query")
    terminal.say(f"wrote {len(hits)} hits to {args.out}")
    return ExitCode.OK


def _labels_files(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder; give a labels CSV")
        if not path.is_file():
            raise FileNotFoundError(f"labels file not found: {path}")


def _store_labels(args, agile, store) -> int:
    """label and import-labels: ``store(archive, path)`` for each file, a summary line each."""
    _labels_files(args.csvs)
    archive = agile.Archive.open(args.db)
    for path in args.csvs:
        terminal.say(f"{path}: {store(archive, path).summary()}")
    return ExitCode.OK


def _label(args, agile) -> int:
    return _store_labels(args, agile, agile.add_labels_csv)


def _train(args, agile) -> int:
    _writable(args.out, "--out")
    archive = agile.Archive.open(args.db, readonly=True)
    path = agile.train_classifier(archive, args.out, epochs=args.epochs)
    terminal.say(f"wrote {path}")
    return ExitCode.OK


def _detect(args, agile) -> int:
    _writable(args.out, "--out")
    if args.raven is not None:
        _writable(args.raven, "--raven", folder=True)
    if not args.probe.is_file():
        raise FileNotFoundError(f"probe file not found: {args.probe}")
    archive = agile.Archive.open(args.db, readonly=True)
    detections = agile.detect(archive, args.probe, threshold=args.threshold)
    detections.to_csv(args.out)
    if args.raven is not None:
        detections.to_raven(args.raven)
    if args.uncertain:
        target = args.out.with_suffix(".uncertain.csv")
        picked = detections.uncertain(args.uncertain, include_labelled=args.include_labelled)
        agile.write_hits_csv(picked, target, label=detections.labels[0])
        terminal.say(f"wrote the {len(picked)} windows nearest the threshold to {target} (fill in label_type, "
                     "then `avex-hub label`)")
    above = int((detections.scores.max(1) >= args.threshold).sum()) if len(detections.scores) else 0
    terminal.say(f"scored {len(detections.scores)} windows, {above} at or above {args.threshold}")
    return ExitCode.OK


def _prune(args, agile) -> int:
    report = agile.prune(agile.Archive.open(args.db), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    listed = "".join(f"\n  {f}" for f in report.removed[:20]) + ("\n  ..." if len(report.removed) > 20 else "")
    kept = f"; their labels were written to {report.labels_file} first" if report.labels_file else ""
    terminal.say(f"{verb} {len(report.removed)} recordings whose audio is gone ({report.windows} windows)"
                 f"{kept}{listed}")
    return ExitCode.OK


def _export(args, agile) -> int:
    _writable(args.out, "--out")
    count = agile.export_labels(agile.Archive.open(args.db, readonly=True), args.out)
    terminal.say(f"wrote {count} labels to {args.out}")
    return ExitCode.OK


def _import(args, agile) -> int:
    return _store_labels(args, agile, agile.import_labels)
