"""``avex-hub scores|times|events|review|calibrate|presence``: from recordings to numbers a monitoring programme
reports.

    avex-hub scores recordings/ --species species.txt --deployments deployments.csv --out scores.csv
    avex-hub times recordings/ --deployments deployments.csv --out recordings.csv   # starts, sites, flags
    avex-hub events scores.csv --threshold 0.5 --deployments deployments.csv --out events.csv --raven tables/
    avex-hub review scores.csv --species species.txt --out review/                # clips + review/review.csv
    avex-hub calibrate review/review.csv --target-precision 0.9 --out thresholds.json
    avex-hub events scores.csv --thresholds thresholds.json --deployments deployments.csv --out events.csv
    avex-hub presence events.csv --occasion day --out presence/                   # site x day, unmarked's shape

``scores.csv`` holds every asked label's score per window (``avex-hub scores`` with the species head or
``--probe``, a ``detect`` CSV with ``--probe``, or a long table of ``file, channel, start_s, end_s, label, score``);
see :mod:`avex_hub.monitoring`. Exit codes as for the other commands: 0 ok, 1 an error stopped it (a failed write),
2 usage (bad arguments or inputs, each named in one line saying what to fix), 3 some recordings could not be read
(``times``, ``scores``: the others are in the table, the failures in ``<out>.failures.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options, terminal
from .errors import CommandError, ExitCode, UsageError
from .model import load_model

__all__ = ["COMMANDS", "add_parsers", "run", "classify_thresholds", "window_clock", "classify_species"]

COMMANDS = ("scores", "times", "events", "review", "calibrate", "presence")


def add_parsers(sub) -> None:
    """Register the monitoring subcommands on ``sub`` (the CLI's subparsers)."""
    where = options.parent("--deployments", "--time-pattern", "--timezone")
    scores = argparse.ArgumentParser(add_help=False)
    scores.add_argument("scores", type=Path, help="score table: classify --species output or detect CSV")
    options.add(scores, "--species")
    options.add(scores, "--probe", help="the probe that made the scores (for a detect CSV, which records no source)")

    score = sub.add_parser("scores", parents=[where], allow_abbrev=False,
                           help="every asked species' score per window, with absolute time and site")
    score.add_argument("paths", nargs="+", metavar="PATH",
                       help="audio files and/or folders (searched recursively), or one avex-hub embed Parquet file "
                            "(mean pooling; the layers the head or probe reads) to score without the model's encoder")
    options.add(score, "--out", help="score table (CSV, one column per label)")
    options.add(score, "--species", help="species list for the model's species head: one scientific name a line")
    options.add(score, "--probe", help="score with this probe (every label of it) instead")
    for name in ("--model", "--checkpoint", "--hop", "--thresholds", "--no-progress"):
        options.add(score, name)
    options.add(score, "--window", help="window in seconds (default: the model's)")

    times = sub.add_parser("times", parents=[where], help="start time, site and flags of every recording")
    times.add_argument("paths", nargs="*", metavar="PATH", help="audio files and/or folders (searched recursively)")
    times.add_argument("--table", type=Path, default=None,
                       help="instead of PATHs: a window table (classify, detect, scores or embed output, CSV or "
                            "Parquet) to write to --out with start_time, end_time, site, latitude, longitude per row")
    options.add(times, "--out", help="recordings table (CSV), or the timed --table")

    events = sub.add_parser("events", parents=[scores, where], help="merge windows above threshold into events")
    how = events.add_mutually_exclusive_group(required=True)
    options.add(how, "--threshold", help="one score threshold for every label (uncalibrated)")
    options.add(how, "--thresholds", help="per-label thresholds from avex-hub calibrate")
    events.add_argument("--gap", type=float, default=0.0, help="join positive windows at most this many s apart")
    options.add(events, "--out", help="events CSV (the recordings table goes beside it)")
    options.add(events, "--raven", help="also one Raven selection table of events per file")

    review = sub.add_parser("review", parents=[scores, where], help="clips to review, stratified over score bins")
    options.add(review, "--out", help="a new folder for clips, spectrograms and the sheet")
    review.add_argument("--bins", type=int, default=10, help="equal-width score bins over [0, 1] (default: 10)")
    review.add_argument("--per-bin", type=int, default=5, help="clips per label and bin (default: 5)")
    review.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default: 0)")
    review.add_argument("--padding", type=float, default=1.0, help="seconds of context each side (default: 1)")

    calibrate = sub.add_parser("calibrate", help="per-label calibration and thresholds from filled review sheets")
    calibrate.add_argument("sheets", nargs="+", type=Path, metavar="SHEET", help="filled review.csv files")
    calibrate.add_argument("--target-precision", type=float, required=True,
                           help="share of detections that should be correct, e.g. 0.9")
    calibrate.add_argument("--min-reviews", type=int, default=20,
                           help="yes/no verdicts a label needs for a threshold (default: 20)")
    options.add(calibrate, "--out", help="thresholds file (.json or .csv)")
    calibrate.add_argument("--labels", type=Path, default=None,
                           help="also write the verdicts as agile labels (CSV for avex-hub label --db ARCHIVE FILE)")

    presence = sub.add_parser("presence", help="site x occasion detections and effort for occupancy models")
    presence.add_argument("events", type=Path, help="events CSV from avex-hub events")
    presence.add_argument("--recordings", type=Path, default=None,
                          help="recordings table (default: the one avex-hub events wrote beside the events)")
    presence.add_argument("--occasion", default="day", help="day (default), hour, Nh (N divides 24) or Nd")
    options.add(presence, "--species", help="species list (default: labels with events)")
    options.add(presence, "--timezone",
                help="local zone of sites the deployments table gives none (default: UTC, and said so)")
    options.add(presence, "--out", help="a folder for the tables")


def run(args) -> int:
    """Run a monitoring subcommand; what stops it is a CommandError (its exit code) or a UsageError (2)."""
    try:
        return {"scores": _scores, "times": _times, "events": _events, "review": _review, "calibrate": _calibrate,
                "presence": _presence}[args.command](args)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, ValueError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise CommandError(f"{error.strerror or error}{f' ({error.filename})' if error.filename else ''}; fix "
                           "the cause and run the command again") from None

def _deployments(args):
    from ..monitoring.deployments import Deployments

    deployments = getattr(args, "deployments", None)
    return Deployments.read(deployments) if deployments is not None else None


def _recordings(args, durations: dict[str, float]):
    from ..monitoring.recordings import describe_recordings

    recordings = describe_recordings(durations, deployments=_deployments(args), time_pattern=args.time_pattern,
                                     timezone=args.timezone)
    flagged = [r for r in recordings if r.flag]
    say_unknown_starts({r.file: r.note for r in recordings if r.start is None}, len(recordings))
    if flagged:
        terminal.say(f"{len(flagged)} recordings are flagged ({', '.join(sorted({r.flag for r in flagged}))}); see the "
                     "recordings table's flag column")
    return recordings


def say_unknown_starts(unknown: dict[str, str], total: int) -> None:
    """One line about the recordings whose start is unknown (``{file: why}``), if any."""
    from ..embed.outputs import text_cell

    if unknown:
        first = next(iter(unknown))
        terminal.say(f"{len(unknown)} of {total} recordings have no known start (their time columns stay empty); "
                     f"first: {text_cell(first)}: {unknown[first]}")


def _score_table(args):
    from ..monitoring.scores import ScoreSource, read_scores
    from ..monitoring.species import read_species

    source = ScoreSource.of_probe(args.probe) if args.probe is not None else None
    table = read_scores(args.scores, source=source)
    if args.species is not None:
        table = table.select(read_species(args.species, table.labels))
    return table


def _scores(args) -> int:
    from ..monitoring.calibration import Thresholds
    from ..monitoring.recordings import by_file
    from ..monitoring.scores import score_with_head, score_with_probe, write_scores
    from ..monitoring.species import read_species

    if (args.species is None) == (args.probe is None):
        raise ValueError("give --species FILE (the species head's scores of those species) or --probe FILE (a "
                         "probe's scores of its labels), one of the two")
    inputs, failures = _score_inputs(args.paths)
    calibration = Thresholds.load(args.thresholds) if args.thresholds is not None else None
    model = load_model(args)
    window_s = args.window if args.window is not None or isinstance(inputs, str) else model.preprocessing.window_s
    if args.probe is not None:
        table = score_with_probe(model, args.probe, inputs, window_s=window_s, hop_s=args.hop,
                                 progress=not args.no_progress)
    else:
        species = read_species(args.species, list(model.labels))
        table = score_with_head(model, species, inputs, window_s=window_s, hop_s=args.hop,
                                progress=not args.no_progress)
    recordings = by_file(_recordings(args, table.durations()))
    write_scores(args.out, table, recordings=recordings, calibration=calibration)
    terminal.say(f"wrote {len(table)} windows x {len(table.labels)} labels to {args.out}")
    return _failures(args.out, {**failures, **table.failures})


def _score_inputs(paths: list[str]) -> tuple[str | list[str], dict[str, str]]:
    """``(recordings or one embed Parquet file, {input: why} of what could not be listed)``."""
    from ..audio.folders import find_audio

    if len(paths) == 1 and paths[0].lower().endswith(".parquet"):
        return paths[0], {}  # an avex-hub embed output: scored without running the model again
    search = find_audio(paths)
    if not search.files:
        raise ValueError(f"no audio files found in {paths} (looked for .wav, .flac, .mp3, .ogg, ...)" + "".join(
            f"; {k}: {v}" for k, v in list(search.failures.items())[:3]))
    return search.files, dict(search.failures)


def _failures(out: Path, failures: dict[str, str]) -> int:
    """Exit code 3 with ``<out>.failures.csv`` listing ``failures``; 0 (and no stale list) without any."""
    from ..embed.outputs import write_failures

    failed = Path(f"{out}.failures.csv")
    if failures:
        write_failures(failed, failures)
        terminal.error(f"{len(failures)} inputs could not be read (listed in {failed})")
        return ExitCode.PARTIAL
    failed.unlink(missing_ok=True)
    return ExitCode.OK


def _times(args) -> int:
    from ..audio.decoding import audio_info
    from ..audio.folders import find_audio
    from ..monitoring.recordings import by_file, place_table, table_windows, write_recordings

    if bool(args.paths) == (args.table is not None):
        raise ValueError("give audio PATHs (a recordings table) or --table FILE (a window table to time), one of the "
                         "two")
    if args.table is not None:
        if not args.table.is_file():
            raise FileNotFoundError(f"window table {args.table} not found")
        count = place_table(args.table, args.out, by_file(_recordings(args, table_windows(args.table))))
        terminal.say(f"wrote {count} rows of {args.table} with their times and sites to {args.out}")
        return ExitCode.OK
    search = find_audio(args.paths)
    if not search.files and not search.failures:
        raise ValueError(f"no audio files found in {args.paths} (looked for .wav, .flac, .mp3, .ogg, ...)")
    durations, failures = {}, dict(search.failures)
    for path in search.files:
        try:
            durations[path] = audio_info(path).duration_s
        except (OSError, ValueError) as error:
            failures[path] = str(error).splitlines()[0]
    recordings = _recordings(args, durations)
    write_recordings(args.out, recordings)
    terminal.say(f"wrote {len(recordings)} recordings to {args.out}")
    return _failures(args.out, failures)


def _events(args) -> int:
    from ..monitoring.calibration import Thresholds
    from ..monitoring.events import find_events, placed, write_event_tables, write_events
    from ..monitoring.recordings import by_file, write_recordings

    table = _score_table(args)
    calibration = None
    if args.thresholds is not None:
        calibration = Thresholds.load(args.thresholds)
        calibration.check(table.source, str(args.thresholds))
        thresholds = {k: v for k, v in calibration.thresholds().items() if k in table.labels}
        missing = [label for label in table.labels if label not in thresholds]
        if missing:
            terminal.say(f"no calibrated threshold for {len(missing)} label(s), so no events for them: " + "; ".join(
                f"{label} ({calibration.labels[label].status if label in calibration.labels else 'not calibrated'})"
                for label in missing[:10]) + (" ..." if len(missing) > 10 else ""))
    else:
        thresholds = {label: args.threshold for label in table.labels}
    recordings = _recordings(args, table.durations())
    events = placed(find_events(table, thresholds, gap_s=args.gap, calibration=calibration), by_file(recordings))
    write_events(args.out, events, settings={"labels": list(thresholds), "thresholds": thresholds, "gap_s": args.gap,
                                             "calibrated": calibration is not None, "scores": str(args.scores),
                                             "source": table.source.to_dict()})
    beside = args.out.with_suffix(".recordings.csv")
    write_recordings(beside, recordings)
    if args.raven is not None:
        write_event_tables(args.raven, events, list(table.durations()))
    terminal.say(f"wrote {len(events)} events of {len({e.label for e in events})} labels from {len(table)} windows to "
                 f"{args.out} (recordings: {beside})")
    return ExitCode.OK


def _review(args) -> int:
    from ..monitoring.recordings import by_file
    from ..monitoring.review import write_review

    table = _score_table(args)
    recordings = by_file(_recordings(args, table.durations()))
    sheet = write_review(args.out, table, table.labels, bins=args.bins, per_bin=args.per_bin, seed=args.seed,
                         padding_s=args.padding, recordings=recordings, scores_path=str(args.scores))
    terminal.say(f"wrote {sheet}: fill its verdict column with yes, no or unsure, then run avex-hub calibrate {sheet} "
                 "--target-precision 0.9 --out thresholds.json")
    return ExitCode.OK


def _calibrate(args) -> int:
    from ..monitoring.calibration import Thresholds, calibrate_label
    from ..monitoring.review import read_reviews, write_agile_labels

    if not 0.0 < args.target_precision < 1.0:
        raise ValueError(f"--target-precision must lie between 0 and 1 (e.g. 0.9), got {args.target_precision}")
    if args.min_reviews < 2:
        raise ValueError(f"--min-reviews must be at least 2, got {args.min_reviews}")
    source, reviews = read_reviews(args.sheets)
    labels = {label: calibrate_label(label, r["scores"], r["verdicts"], r["histogram"],
                                     target_precision=args.target_precision, min_reviews=args.min_reviews)
              for label, r in reviews.items()}
    Thresholds(source, args.target_precision, labels).save(args.out)
    if args.labels is not None:
        count = write_agile_labels(args.labels, reviews)
        terminal.say(f"wrote {count} verdicts as agile labels to {args.labels} (store them: avex-hub label --db "
                     f"ARCHIVE {args.labels})")
    for c in labels.values():
        text = (f"threshold {c.threshold:.4f} (precision {c.precision:.3f}, 95% {c.precision_low:.3f}-"
                f"{c.precision_high:.3f})" if c.threshold is not None else f"no threshold: {c.status}; {c.note}")
        print(f"{c.label}: {c.reviews.get('yes', 0)} yes, {c.reviews.get('no', 0)} no, "
              f"{c.reviews.get('unsure', 0)} unsure; {text}")
    terminal.say(f"wrote {args.out}")
    return ExitCode.OK


def _presence(args) -> int:
    from ..monitoring.events import events_settings, read_events
    from ..monitoring.presence import presence_table, write_presence
    from ..monitoring.recordings import read_recordings
    from ..monitoring.species import read_species

    recordings_path = args.recordings or args.events.with_suffix(".recordings.csv")
    if not recordings_path.is_file():
        raise FileNotFoundError(f"recordings table {recordings_path} not found; give --recordings (avex-hub events "
                                "writes it beside the events, avex-hub times writes one for any folder)")
    events, recordings = read_events(args.events), read_recordings(recordings_path)
    searched = events_settings(args.events).get("labels") or sorted({e.label for e in events})
    labels = read_species(args.species, searched) if args.species is not None else searched
    presence = presence_table(recordings, events, occasion=args.occasion, labels=labels, timezone=args.timezone)
    write_presence(args.out, presence)
    for reason, count in presence.left_out.items():
        terminal.say(f"left out: {count} {reason}")
    terminal.say(f"wrote {len(presence.sites)} sites x {len(presence.occasions)} occasions ({presence.unit}) for "
                 f"{len(presence.labels)} labels to {args.out}/")
    return ExitCode.OK


# -- classify's and embed's monitoring options (--species, --thresholds, --times); ValueErrors, usage errors there
def classify_thresholds(args):
    """classify --thresholds FILE read; None without it."""
    if getattr(args, "thresholds", None) is None:
        return None
    from ..monitoring.calibration import Thresholds

    try:
        return Thresholds.load(args.thresholds)
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None


def window_clock(args, files: list[str]):
    """embed|classify --times: the :class:`avex_hub.monitoring.recordings.WindowClock` of ``files`` (``start_time``,
    ``end_time``; with --deployments ``site``, ``latitude``, ``longitude``, as ``avex-hub times --table`` writes them)
    from each recording's start (the same reading and the same line about unknown starts as ``avex-hub times``);
    None without --times."""
    if not getattr(args, "times", False):
        if any(getattr(args, k, None) for k in ("time_pattern", "timezone", "deployments")):
            raise ValueError("--time-pattern, --timezone and --deployments set how --times reads recording starts "
                             "and sites; add --times")
        return None
    from ..monitoring.recordings import PLACE_COLUMNS, WindowClock, by_file

    recordings = by_file(_recordings(args, dict.fromkeys(files, 0.0)))  # durations are not needed, only starts
    return WindowClock(recordings, PLACE_COLUMNS if args.deployments is not None else PLACE_COLUMNS[:2])


def classify_species(args, labels, calibration=None) -> list[str] | None:
    """classify --species: a file of names (one a line, checked by :func:`avex_hub.monitoring.species.read_species`)
    or a comma list (checked by :func:`avex_hub.embed.inference.inference_settings`); without it the labels of
    --thresholds, or None."""
    value = getattr(args, "species", None)
    if value is None:
        return None if calibration is None else list(calibration.labels)
    if Path(value).is_file():
        from ..monitoring.species import read_species

        return read_species(value, list(labels))
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--species {value!r}: expected scientific names separated by commas, or a file of them")
    return names
