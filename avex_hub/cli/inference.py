"""``avex-hub embed|classify``: embeddings or species scores of folders of recordings, one row per window.

    avex-hub embed recordings/ --out emb.parquet            # one row per 10 s window
    avex-hub classify recordings/ --out species.csv --raven tables/ --min-score 0.5
    avex-hub classify recordings/ --out scores.csv --species "Strix aluco,Bubo bubo"   # every asked score, no top k

The extension of ``--out`` sets the format: embed writes ``.parquet`` or ``.npz``, classify ``.csv``; any other
extension is refused (exit code 2).

Resumable: each input's rows go to ``<out>.parts/<hash>.npz`` (written atomically) as soon as the
file is done; a re-run skips inputs whose shard exists with the same settings (the hash covers the
input's absolute path, size and modification time, or an object's URL, ETag or version id and size, and
every setting that changes an output value: weights digest, architecture, preprocessing, precision,
runtime, channels, window, hop, layers, pooling, top-k, label names and the output format version) and
then rebuilds ``--out`` from the shards. A shard that
cannot be read (a disk filled up, a copy cut short) is recomputed, with a line naming it. The settings
are recorded in the output: Parquet schema metadata ``avex_hub``, NPZ field ``settings``, and for CSV
the sidecar ``<out>.settings.json``. ``--times`` and its options are not settings: their columns are derived from
the recordings' starts each time ``--out`` is written, so a run with them resumes the shards of a run without.

Exit codes: 0 success; 1 an error stopped the command (weights unavailable or unreadable, digest
mismatch, the runtime's graph could not be exported, disk full or another write error: finished files are
kept and a re-run resumes); 2 usage error (bad arguments, no inputs, an --out or --raven that cannot be
written, a --runtime and --precision pair that does not exist or whose package is missing, a bad --shard or
--storage-options, a store that cannot be used, a Ray cluster that does not answer or Ray missing for --engine ray,
checked before any work);
3 some inputs could not be read (every other input was written; they and any folder that could not be
listed are in ``<out>.failures.csv``); 130 interrupted (finished files are kept).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .._files import check_writable
from ..storage.locations import StorageAccessError, absolute, redact
from . import options, terminal
from .engine import check_engine, file_results
from .errors import CommandError, ExitCode, UsageError
from .model import load_model, runtime_device
from .scale import part_written, record_shard, run_context, take_shard

__all__ = ["COMMANDS", "add_parsers", "run", "shard_name"]

COMMANDS = ("embed", "classify")
STORES = True  # --out and --raven may be URLs (avex_hub.cli.scale)


def add_parsers(sub) -> None:
    """Register embed and classify on ``sub`` (the CLI's subparsers)."""
    run = options.parent("--model", "--checkpoint", "--window", "--hop", "--channels", "--device", "--batch-size",
                         "--workers", "--precision", "--runtime", "--threads", "--overwrite", "--no-progress",
                         "--shard", "--storage-options", "--engine", "--address")
    run.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders (searched recursively)")
    options.add(run, "--out", help="output file; its extension sets the format (embed: "
                f"{_extensions('embed')}; classify: {_extensions('classify')}; others are refused)")
    options.add(run, "--times",
                help="start_time and end_time (ISO 8601 with the offset) of every window (classify: after end_s; "
                     "embed: after embedding), from each recording's start (GUANO, AudioMoth comment, file name); "
                     "empty where it is unknown, never guessed")
    options.add(run, "--time-pattern",
                help="with --times: strptime pattern of the start in file paths, e.g. %%Y%%m%%d-%%H%%M%%S")
    options.add(run, "--timezone", help="with --times: the recorder clock's zone for local times without an offset")
    options.add(run, "--deployments", help="with --times: deployments CSV; site, latitude, longitude after end_time")
    # allow_abbrev=False: an option is its full name (a prefix such as --layer would silently mean --layers)
    embed = sub.add_parser("embed", parents=[run], allow_abbrev=False,
                           help="embeddings per window -> Parquet (or .npz)")
    options.add(embed, "--format", choices=("parquet", "npz"),
                help="output format; it must agree with the --out extension ("
                     + ", ".join(f"{ext}: {fmt}" for ext, fmt in _OUTPUT_FORMATS["embed"].items()) + ")")
    options.add(embed, "--layers")
    options.add(embed, "--pooling")
    classify = sub.add_parser("classify", parents=[run], allow_abbrev=False,
                              help="top-k species per window -> CSV (+ Raven tables)")
    classify.add_argument("--top-k", type=int, default=5, help="species per window (default: 5)")
    options.add(classify, "--species", metavar="A,B|FILE",
                help="scientific names (a comma list, or a file with one a line): every window gets each one's "
                     "score, in place of the top k (misspelt names are refused with the closest labels)")
    options.add(classify, "--thresholds",
                help="thresholds file of avex-hub calibrate (refused for another model's weights): probability and "
                     "detected columns per asked species (default species: its labels)")
    options.add(classify, "--raven")
    classify.add_argument("--min-score", type=float, default=0.0,
                          help="Raven tables keep windows whose top-1 score is at least this (default: 0)")


def _comparable(settings: dict) -> dict:
    """The settings that decide whether a stored shard can be reused: all of them but the package version
    (``output_version`` changes when a release changes what is written)."""
    return {k: v for k, v in settings.items() if k != "avex_hub_version"}


def shard_name(path: str, settings: dict) -> str:
    """Shard file name for ``path`` under ``settings``: changes when the file (its absolute path, size or
    modification time: :func:`avex_hub.embed.outputs.file_fingerprint`) or any setting changes."""
    from ..embed.outputs import file_fingerprint

    key = {**file_fingerprint(absolute(path)), "settings": _comparable(settings)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".npz"


# What each command writes, by the extension of --out: the name says the format, and a name that says another
# format (embed --out e.csv, classify --out c.parquet) is refused before any work.
_OUTPUT_FORMATS = {"embed": {".parquet": "parquet", ".npz": "npz"}, "classify": {".csv": "csv"}}


def _extensions(command: str) -> str:
    return " or ".join(_OUTPUT_FORMATS[command])


def _output_format(args) -> str:
    formats = _OUTPUT_FORMATS[args.command]
    suffix = args.out.suffix.lower()
    if suffix not in formats:
        names = " or ".join(f"{args.out.stem or args.command}{ext}" for ext in formats)
        raise UsageError(f"--out {args.out}: {args.command} writes {_extensions(args.command)} files (the extension "
                         f"sets the format), found {suffix or 'no extension'}; name it {names}")
    fmt = formats[suffix]
    if getattr(args, "format", None) not in (None, fmt):
        raise UsageError(f"--format {args.format} disagrees with --out {args.out}, which names a {suffix} ({fmt}) "
                         f"file; drop --format or name the file {args.out.stem}.{args.format}")
    if fmt == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise UsageError("Parquet output needs pyarrow: pip install 'avex-hub[cli]', or write --out FILE.npz")
    return fmt


def _check_writable(folder: Path, flag: str) -> None:
    """Create and remove a file in ``folder`` (made if missing): a read-only --out fails before any work."""
    try:
        check_writable(folder, flag)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_targets(args, fmt: str, out: Path, parts: Path) -> None:
    """Usage errors about where the outputs go, found before any audio is read."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / ('embeddings.' + fmt)}")
    if out.exists() and not parts.is_dir() and not args.overwrite:
        raise UsageError(f"{out} exists and was not written by a resumable avex-hub run (no {parts}/); "
                         "pass --overwrite to replace it or choose another --out")
    raven = getattr(args, "raven", None)
    if raven is not None and raven.exists() and not raven.is_dir():
        raise UsageError(f"--raven {raven} is a file; --raven takes a folder, which gets one selection table per "
                         "input file")
    _check_writable(out.parent, "--out")
    _check_writable(parts, "--out")
    if raven is not None:
        _check_writable(raven, "--raven")


def _written(parts: Path) -> str:
    sizes = [p.stat().st_size for p in parts.glob("*.npz")] if parts.is_dir() else []
    return f"{len(sizes)} finished files ({sum(sizes) / 1e6:.1f} MB) are kept in {parts}/"


def _write_error(failure: OSError, parts: Path) -> CommandError:
    """A failed write (disk full, quota, I/O error): one line, and how to go on."""
    import errno

    what = "the disk is full" if failure.errno in (errno.ENOSPC, errno.EDQUOT) else (failure.strerror or str(failure))
    where = f" writing {failure.filename}" if failure.filename else ""
    return CommandError(f"{what}{where}; {_written(parts)}: free space (or fix the cause) and run the same command "
                        "again, it resumes from them")


def run(args) -> int:
    """Run embed or classify: usage checked before the weights load, then the files the shards lack, then --out."""
    with run_context(args):  # --shard, --storage-options; --out in object storage
        return _run(args)


def _run(args) -> int:
    from ..audio.arrays import SAMPLE_RATE, WINDOW_S
    from ..audio.folders import find_audio
    from ..audio.windows import window_params
    from ..embed.inference import inference_settings
    from ..encoder.onnx_graph import GraphExportError
    from ..encoder.precision import check_precision, resolve_device

    fmt = _output_format(args)
    out: Path = args.out
    parts = Path(f"{out}.parts")
    try:
        search = find_audio(args.paths, skip=[parts])
        device = resolve_device(runtime_device(args))
    except (FileNotFoundError, ValueError, RuntimeError, StorageAccessError) as error:  # a store: unreachable, refused
        raise UsageError(str(error)) from None
    if not search.files and not search.failures:
        raise UsageError(f"no audio files found in {args.paths} (looked for .wav, .flac, .mp3, .ogg, ...)")
    search, shard = take_shard(args, search)  # --shard I/N: this machine's share
    try:  # cheap checks before loading weights
        window_params(WINDOW_S if args.window is None else args.window, args.hop, SAMPLE_RATE)
        check_precision(args.precision, device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_engine(args)  # --engine ray: the cluster reached before any work
    if (getattr(args, "species", None) or getattr(args, "thresholds", None)) and args.raven is not None:
        raise UsageError("--raven tables hold one selection a window, its best label; with --species or "
                         "--thresholds every asked label is scored in every window, and their selections are events "
                         "(windows above a threshold merged): write the scores, then avex-hub events SCORES.csv "
                         "--thresholds FILE --raven DIR (its tables carry start_time and end_time)")
    _check_targets(args, fmt, out, parts)
    from .monitoring import classify_species, classify_thresholds, window_clock  # --thresholds, --times

    try:  # read before the weights load
        calibration, clock = classify_thresholds(args), window_clock(args, search.files)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model = load_model(args)
    try:
        settings = inference_settings(model, args.command, window_s=args.window, hop_s=args.hop,
                                      channels=args.channels, layers=getattr(args, "layers", -1),
                                      pooling=getattr(args, "pooling", "mean"), precision=args.precision,
                                      top_k=getattr(args, "top_k", 5), runtime=args.runtime,
                                      species=classify_species(args, model.labels, calibration))
        _refuse_repeated_layers(model, getattr(args, "layers", -1))
        if calibration is not None:  # before any audio is read
            calibration.check_settings(settings.to_dict(), str(args.thresholds))
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    try:
        return _process(args, fmt, model, settings, search, device, calibration, clock, shard)
    except GraphExportError as error:
        raise CommandError(f"{error}; no file was computed (--runtime torch runs without a graph)") from None
    except OSError as error:
        raise CommandError(_named(args, str(_write_error(error, parts)))) from None


def _named(args, text: str) -> str:
    """``text`` with the local copy of an ``--out`` in object storage named by the URL the user gave (the copy is
    deleted when the run ends)."""
    stage = getattr(args, "stage", None)
    return text if stage is None else text.replace(str(stage.local), stage.target)


def _refuse_repeated_layers(model, layers) -> None:
    """--layers naming one layer twice (1,1; or -1,12 on a 12-layer model) would write each of its rows twice."""
    resolved = model.layer_indices(layers)
    repeated = sorted({index for index in resolved if resolved.count(index) > 1})
    if repeated:
        given = ",".join(map(str, layers)) if isinstance(layers, list) else layers
        raise ValueError(f"--layers {given} names layer {', '.join(map(str, repeated))} more than once (the model's "
                         f"layers are 0..{model.num_layers}, and -1 is {model.num_layers}); give each layer once")


def _process(args, fmt: str, model, settings: dict, search, device, calibration=None, clock=None,
             shard=None) -> int:
    """Compute the missing shards, merge them into --out, report failures; returns the exit code."""
    from ..embed import outputs

    files, out = search.files, args.out
    parts, failures_path = Path(f"{out}.parts"), Path(f"{out}.failures.csv")
    record = settings.to_dict()  # as stored with each shard and compared on resume
    names = {f: shard_name(f, record) for f in files}
    todo = [f for f in files if args.overwrite or not _shard_ok(parts / names[f], record, f)]
    for f in [] if args.overwrite else list(todo):  # shards of output version 2 (before the one-window rule)
        earlier = parts / shard_name(f, outputs.earlier_settings(settings))
        if earlier.is_file():
            why = outputs.carry_over_shard(earlier, parts / names[f], settings)
            if why is None:
                todo.remove(f)
            else:
                terminal.say(f"recomputing {outputs.text_cell(f)}: {why}")
    skipped = len(files) - len(todo)
    if skipped and not args.no_progress:
        terminal.say(_named(args, f"{skipped} of {len(files)} files already done in {parts}/, skipping them"))
    failures: dict[str, str] = dict(search.failures)  # folders that could not be listed come first
    for result in file_results(args, model, todo, settings, device):  # this machine, or Ray
        if result.error is not None:
            failures[result.path] = result.error
            continue
        meta = {"path": result.path, "abspath": absolute(result.path), "settings": record,
                "num_windows": result.num_windows, "duration_s": result.duration_s}
        outputs.write_shard(parts / names[result.path], result.arrays, meta)
        part_written(args, parts / names[result.path])  # --out in object storage: uploaded now

    failures = {path: redact(why) for path, why in failures.items()}  # no secret in the failure list or on stderr
    done = [f for f in files if f not in failures]
    rows, flagged = _merge(args, fmt, model, settings, [(f, parts / names[f]) for f in done], calibration,
                           clock)
    record_shard(out, shard, failures)  # what this shard covered, for avex-hub merge
    terminal.say(_named(args, _summary(out, rows, len(done), skipped, len(failures), flagged)))
    truncated = flagged["truncated"]
    if truncated:
        terminal.say(f"warning: {len(truncated)} of {len(done)} files decode less audio than their headers state "
                     "(cut short by a copy or download?); their rows are flagged truncated: "
              + ", ".join(outputs.text_cell(f) for f in truncated[:20]) + (" ..." if len(truncated) > 20 else ""))
    if failures:
        outputs.write_failures(failures_path, failures)
        total = len(files) + len(search.failures)
        terminal.error(_named(args, f"{len(failures)} of {total} inputs could not be processed (listed in "
                                    f"{failures_path}):"))
        for path, why in failures.items():
            print(f"  {outputs.text_cell(path)}: {outputs.text_cell(why.splitlines()[0][:300])}", file=sys.stderr)
        return ExitCode.PARTIAL
    failures_path.unlink(missing_ok=True)  # an old report would describe a run that is now complete
    return ExitCode.OK


def _shard_ok(path: Path, settings: dict, source: str) -> bool:
    """Whether the shard at ``path`` holds ``source`` under ``settings``; an unreadable one is announced."""
    if not path.is_file():
        return False
    from ..embed.outputs import read_shard, text_cell

    try:
        _, meta = read_shard(path)
    except ValueError as error:
        terminal.say(f"recomputing {text_cell(source)}: {error}")
        return False
    same_file = meta.get("abspath") == absolute(source)
    return same_file and _comparable(meta.get("settings", {})) == _comparable(settings)


def _merge(args, fmt: str, model, settings: dict, shards: list[tuple[str, Path]], calibration=None,
           clock=None) -> tuple[int, dict[str, list[str]]]:
    """Rebuild --out from the shards of every successful input, in input order, one shard at a time; returns the
    rows written and, for each quality flag, the inputs with a window so flagged. ``calibration`` (classify
    --thresholds) is applied to the CSV, ``clock`` (--times) to every output; the clock is not among the settings
    that name the shards (its columns are derived here from the recordings' starts), so a run with --times resumes
    from the shards of a run without and only writes --out again."""
    from ..embed import outputs

    flagged: dict[str, dict[str, None]] = {flag: {} for flag in outputs.FLAG_NAMES}

    def parts():
        for name, path in shards:
            arrays, _ = outputs.read_shard(path)
            for flag, any_window in zip(outputs.FLAG_NAMES, arrays["flags"].any(axis=0)):
                if any_window:
                    flagged[flag][name] = None
            yield name, arrays

    if fmt == "parquet":
        rows = outputs.write_parquet(args.out, parts(), settings, model.embedding_dim, clock)
    elif fmt == "npz":
        rows = outputs.write_npz(args.out, parts(), settings, model.embedding_dim, clock)
    else:
        rows = outputs.write_csv(args.out, parts(), tuple(model.labels), settings=settings, calibration=calibration,
                                 clock=clock)
        if args.raven is not None:
            names = outputs.raven_names([name for name, _ in shards])
            outputs.write_raven_tables(args.raven, parts(), tuple(model.labels), names, args.min_score, clock)
    return rows, {flag: list(names) for flag, names in flagged.items()}


def _summary(out: Path, rows: int, files: int, skipped: int, failed: int, flagged: dict[str, list[str]]) -> str:
    """The run in one line (printed with or without --no-progress): rows written, inputs skipped because an earlier
    run finished them, inputs that failed, and the inputs with flagged windows, per flag."""
    any_flag = {name for names in flagged.values() for name in names}
    per_flag = ", ".join(f"{flag} {len(names)}" for flag, names in flagged.items() if names)
    return (f"wrote {rows} rows from {files} files to {out}; files skipped (done by an earlier run): "
            f"{skipped}, failed: {failed}, flagged: {len(any_flag)}" + (f" ({per_flag})" if per_flag else ""))
