"""Review: clips to listen to, sampled per label across the whole score range, and the sheet their verdicts go in.

Sampling: per label (in the order given), the windows are put in ``bins`` bins of equal width in the score's logit,
from the label's lowest to its highest score (logits clipped to +-12), and up to ``per_bin`` windows are drawn from
each at random (``seed``), so reviewers see low, middle and high scores, not only the top. Logit bins give the range
where a threshold for a high precision lies (0.9 to 0.999, say) as many reviews as 0.4 to 0.6; on the benchmark's
survey, bins of equal width in the score itself left the top bin too few reviews and the calibrated precision
fell 0.13 short at a 0.7 target (README, "Monitoring programmes"). A window is drawn at most once over all labels:
never two clips of one window.

Written to a new folder: ``clips/NNNN.wav`` (the window with ``padding_s`` of context each side, its channel at the
recording's own sample rate), ``clips/NNNN.png`` (its spectrogram, :mod:`avex_hub.monitoring.spectrogram`; the
window between dashed lines), ``review.csv`` (one row per clip; fill ``verdict`` with ``yes``, ``no`` or
``unsure``: does the clip's window hold the label?) and ``review.json`` (the scores' source, the sampling settings
and each label's score histogram over every window, which calibration needs to estimate precision).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .calibration import score_histogram
from .scores import ScoreSource, ScoreTable
from .tables import read_table, write_table

__all__ = ["SHEET", "SETTINGS", "REVIEW_COLUMNS", "VERDICTS", "score_bins", "sample_reviews", "write_review",
           "read_reviews", "write_agile_labels", "LABEL_TYPES"]

SHEET, SETTINGS = "review.csv", "review.json"
FORMAT, FORMAT_VERSION = "avex-hub review", 1
VERDICTS = ("yes", "no", "unsure")
LABEL_TYPES = {"yes": "positive", "no": "negative", "unsure": "uncertain"}  # a verdict as an agile label type
AGILE_COLUMNS = ["file", "channel", "start_s", "end_s", "label", "label_type", "provenance"]
REVIEW_COLUMNS = ["review_id", "label", "score", "score_bin", "file", "channel", "start_s", "end_s", "start_time",
                  "site", "clip", "spectrogram", "clip_start_s", "verdict", "note"]


def score_bins(scores: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bin of each score, bin edges as scores [bins + 1])``: equal widths in the logit between the lowest and
    highest score (logits clipped to +-12)."""
    from .calibration import logit

    x = np.clip(logit(scores), -12.0, 12.0)
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    return which, 1.0 / (1.0 + np.exp(-edges))


def sample_reviews(table: ScoreTable, labels: list[str], *, bins: int = 10, per_bin: int = 5,
                   seed: int = 0) -> list[tuple[int, str, int]]:
    """``[(window row, label, score bin)]``: per label and bin up to ``per_bin`` windows, each window once."""
    if not (isinstance(bins, int) and bins >= 1 and isinstance(per_bin, int) and per_bin >= 1):
        raise ValueError(f"bins and per_bin must be positive whole numbers, got {bins}, {per_bin}")
    rng = np.random.default_rng(seed)
    taken = np.zeros(len(table), bool)
    picks = []
    for label in labels:
        which, _ = score_bins(table.column(label), bins)
        for b in range(bins):
            pool = np.flatnonzero((which == b) & ~taken)
            chosen = np.sort(rng.choice(pool, size=min(per_bin, len(pool)), replace=False)) if len(pool) else pool
            taken[chosen] = True
            picks += [(int(i), label, b) for i in chosen]
    return picks


def _clip(path: str, channel: int, start: float, end: float, padding_s: float):
    """``(mono audio, sample rate, seconds from the clip's start to the window's)``: the recording as it is (its own
    rate, the window's channel or the mean of all for the mix), ``padding_s`` each side within the file."""
    from ..audio.arrays import MIX_CHANNEL
    from ..audio.decoding import open_audio, read_frames

    f, name = open_audio(path)
    with f:
        rate = f.samplerate
        first, last = max(0, round((start - padding_s) * rate)), min(f.frames, round((end + padding_s) * rate))
        if channel != MIX_CHANNEL and not 0 <= channel < f.channels:
            raise ValueError(f"{name} has {f.channels} channel(s), the score table names channel {channel}")
        f.seek(first)
        data = read_frames(f, max(0, last - first), name)  # [frames, channels]
    return (data.mean(1) if channel == MIX_CHANNEL else data[:, channel]), rate, start - first / rate


def write_review(folder: str | os.PathLike, table: ScoreTable, labels: list[str], *, bins: int = 10,
                 per_bin: int = 5, seed: int = 0, padding_s: float = 1.0, recordings=None,
                 scores_path: str | None = None) -> Path:
    """Sample, write clips, spectrograms, the sheet and its settings into ``folder``; returns the sheet's path.

    ``recordings``: ``{file: Recording}`` to fill ``start_time`` and ``site``. A folder already holding a sheet is
    refused, so filled verdicts are never overwritten.
    """
    import soundfile as sf

    from .spectrogram import spectrogram_image, write_png
    from .times import iso

    folder = Path(folder)
    if (folder / SHEET).exists() or (folder / SETTINGS).exists():
        raise FileExistsError(f"{folder} already holds a review ({SHEET}); choose a new folder, verdicts already "
                              "filled are never overwritten")
    if not (np.isfinite(padding_s) and padding_s >= 0):
        raise ValueError(f"padding must be a number of seconds >= 0, got {padding_s}")
    picks = sample_reviews(table, labels, bins=bins, per_bin=per_bin, seed=seed)
    edges = {label: score_bins(table.column(label), bins)[1] for label in labels}
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (i, label, b) in enumerate(picks, start=1):
        file, channel = str(table.file[i]), int(table.channel[i])
        start, end = float(table.start_s[i]), float(table.end_s[i])
        clip = png = offset = note = ""
        try:
            audio, rate, offset = _clip(file, channel, start, end, padding_s)
            clip, png = f"clips/{number:04d}.wav", f"clips/{number:04d}.png"
            sf.write(str(folder / clip), audio, rate, subtype="PCM_16")
            write_png(folder / png, spectrogram_image(audio, rate, marks_s=(offset, offset + end - start)))
        except (OSError, ValueError) as error:  # a moved or unreadable recording: the row stays, saying why
            note = f"no clip: {str(error).splitlines()[0][:200]}"
        recording = (recordings or {}).get(file)
        score_bin = f"{edges[label][b]:.4g}-{edges[label][b + 1]:.4g}"
        rows.append([number, label, table.scores[i, table.index(label)], score_bin, file, channel, start, end,
                     iso(recording.time_at(start)) if recording else "", recording.site if recording else "", clip,
                     png, offset, "", note])
    settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": table.source.to_dict(),
                "scores": scores_path, "labels": list(labels), "bins": bins, "per_bin": per_bin, "seed": seed,
                "padding_s": padding_s, "histograms": {label: score_histogram(table.column(label)) for label in labels}}
    from ..embed.outputs import atomic_path

    with atomic_path(folder / SETTINGS, ".json") as tmp:
        tmp.write_text(json.dumps(settings) + "\n", encoding="utf-8")
    write_table(folder / SHEET, REVIEW_COLUMNS, rows)
    return folder / SHEET


def _settings(sheet: Path) -> dict:
    path = sheet.parent / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{sheet}: its {SETTINGS} is missing from {sheet.parent}; keep the sheet in the folder "
                                "avex-hub review wrote (the scores' source and histograms are there)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a review settings file of format {FORMAT!r} version {FORMAT_VERSION}")
    return data


def _window(row: dict, where: str) -> tuple[str, int, float, float]:
    try:
        return row["file"], int(row["channel"]), float(row["start_s"]), float(row["end_s"])
    except ValueError:
        raise ValueError(f"{where}: channel, start_s and end_s must be numbers; was the row edited?") from None


def read_reviews(sheets: list[str | os.PathLike]) -> tuple[ScoreSource, dict[str, dict]]:
    """Filled sheets -> ``(source, {label: {"scores", "verdicts", "histogram", "windows"}})``; ``windows`` are the
    reviewed windows' ``(file, channel, start_s, end_s)``.

    Verdicts are ``yes``, ``no``, ``unsure`` or empty (not reviewed), in any case and with spaces around; anything
    else is a ValueError naming the sheet and line. All sheets must come from scores of one source; a window
    reviewed twice for one label (the same sheet given twice) is refused. Histograms of several reviews add up.
    """
    source, out, seen = None, {}, {}
    for sheet in map(Path, sheets):
        settings = _settings(sheet)
        this = ScoreSource(**settings["source"])
        if source is not None and source.differences(this):
            raise ValueError(f"{sheet} reviews scores of another source than the sheets before it "
                             f"({'; '.join(source.differences(this))}); calibrate each model's reviews separately")
        source = this
        for label, counts in settings["histograms"].items():
            entry = out.setdefault(label, {"scores": [], "verdicts": [], "windows": [],
                                           "histogram": np.zeros(len(counts), int)})
            entry["histogram"] = entry["histogram"] + np.asarray(counts, int)
        _, rows = read_table(sheet, required=("label", "score", "file", "channel", "start_s", "end_s", "verdict"))
        for line, row in rows:
            verdict = row["verdict"].strip().lower()
            if verdict not in VERDICTS + ("",):
                raise ValueError(f"{sheet}, line {line}: verdict {row['verdict']!r} is not yes, no or unsure; correct "
                                 "it, or leave it empty for a clip not reviewed")
            key = (row["label"], row["file"], row["channel"], row["start_s"])
            if key in seen:
                raise ValueError(f"{sheet}, line {line} reviews the window of {seen[key]} again; give each sheet once")
            seen[key] = f"{sheet}, line {line}"
            if row["label"] not in out:
                raise ValueError(f"{sheet}, line {line}: label {row['label']!r} was not sampled in this review "
                                 f"({', '.join(settings['labels'])}); was the row copied from another sheet?")
            try:
                score = float(row["score"])
            except ValueError:
                raise ValueError(f"{sheet}, line {line}: score {row['score']!r} is not a number") from None
            out[row["label"]]["scores"].append(score)
            out[row["label"]]["verdicts"].append(verdict)
            out[row["label"]]["windows"].append(_window(row, f"{sheet}, line {line}"))
    if source is None:
        raise ValueError("no review sheets given")
    return source, out


def write_agile_labels(path: str | os.PathLike, reviews: dict[str, dict], *,
                       provenance: str = "avex-hub review") -> int:
    """The verdicts of :func:`read_reviews` as a labels CSV of the agile archive (``avex-hub label --db ARCHIVE
    FILE``): one row per reviewed window and label, ``yes`` as ``positive``, ``no`` as ``negative``, ``unsure`` as
    ``uncertain``; clips left unreviewed are not written. The windows are named by file, channel, start and end,
    which the archive matches to its own windows (a review of ``detect`` scores names them exactly). Returns the
    number of labels written."""
    rows = [[*window, label, LABEL_TYPES[verdict], provenance]
            for label, r in reviews.items() for window, verdict in zip(r["windows"], r["verdicts"]) if verdict]
    return write_table(path, AGILE_COLUMNS, rows)
