"""Writers for inference results: per-file shards, Parquet, NPZ, CSV, Raven selection tables.

Every writer is atomic: it writes a temporary file in the destination folder and ``os.replace``-s it
into place, so an interrupted run never leaves a half-written file under the final name.

Schemas (one row per window, or per window and layer for embeddings):

* Parquet (``embed``): ``file`` string, ``channel`` int32 (-1 for the mono mix), ``start_s`` and
  ``end_s`` float64 (seconds on the file's timeline; ``end_s`` is the end of real audio, before
  padding), ``layer`` int16, ``clipped`` / ``silent`` / ``too_short`` bool (quality of the window's
  real audio), ``truncated`` bool (on every row of a file that decodes fewer frames than its header
  states), ``embedding`` fixed_size_list<float32>[C]. The schema metadata key ``avex_hub`` holds the
  settings as JSON (model, weights digest, architecture, preprocessing, window, hop, pooling, precision, ...).
* NPZ (``embed``): ``embeddings`` float32 [n, C], ``file`` str [n], ``channel`` int32 [n] (-1 for the
  mix), ``start_s``, ``end_s`` float64 [n], ``layer`` int16 [n], ``flags`` bool [n, 4] (clipped,
  silent, too_short, truncated), ``settings`` (a JSON string). Loads with ``np.load(path)`` (no pickle).
* CSV (``classify``): ``file,channel,start_s,end_s,rank,label,score,flags``; top-k rows per window, rank 1
  first, ``score`` the sigmoid probability; ``channel`` -1 for the mix; ``flags`` the window's set flags
  joined by ``;`` (e.g. ``silent;truncated``), empty when none. Times are plain decimal seconds
  (``1234567.5``, never ``1.23457e+06``). The settings go to the sidecar ``<out>.settings.json``. With ``species``
  asked (``classify --species``): every asked label's row in every window, in the order asked, and no ``rank``;
  with a thresholds file (``classify --thresholds``) ``probability`` and ``detected`` after ``score``.
* Raven selection table (``classify``, one per input file): tab-separated ``Selection, View, Channel,
  Begin Time (s), End Time (s), Low Freq (Hz), High Freq (Hz), Species, Score, Flags`` for windows whose
  top-1 score is at least ``min_score``; Channel is 1-based (1 for the mix); with ``classify --times``
  ``start_time`` and ``end_time`` after Flags (and ``site``, ``latitude``, ``longitude`` with --deployments). Tabs and line breaks in a
  label are written as ``\\t``, ``\\n``, ``\\r`` so that a row stays one row.

Text cells stay readable in other programs: a file name that is not valid UTF-8 is written with its odd
bytes as ``\\xNN`` escapes (every output, the failure report included), and in CSV files a text cell
starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so that a
spreadsheet shows it as text instead of running it as a formula (numbers are written as numbers).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..audio.arrays import MIX_CHANNEL
from ..audio.quality import FLAG_NAMES
from ..storage.locations import is_url
from ..storage.objects import identity
from .settings import InferenceSettings

__all__ = [
    "FLAG_NAMES", "atomic_path", "file_fingerprint", "write_shard", "read_shard", "earlier_settings",
    "carry_over_shard", "write_parquet", "write_npz", "write_csv", "write_raven_tables", "write_failures",
    "raven_names", "text_cell", "save_npz", "clock_fields", "clock_arrays",
]

RAVEN_HIGH_FREQ_HZ = 8000.0  # the model hears 0-8 kHz (16 kHz input)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it over ``target``, else delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}"
    with open(tmp, "xb"):  # created with the umask's permissions (mkstemp would make it owner-only)
        pass
    mode = os.stat(tmp).st_mode & 0o777
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors does) leave it owner-only
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` (what ``np.savez`` writes, which cannot take an array named ``file``)."""
    with atomic_path(target, ".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, value in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)


# -- what identifies an input file: the key of shards and of extraction caches -----------------------
def file_fingerprint(path: str | os.PathLike) -> dict:
    """``{"path", "size", "mtime_ns"}`` of ``path``: what tells that a file changed, without reading it.

    The one definition behind the CLI's shard names (``avex_hub.cli.shard_name``) and the extraction caches'
    dataset digest (``avex_hub.embed.extract.dataset_fingerprint``), each of which adds its own settings.
    ``path`` is kept as given (``os.fspath``): the CLI passes an absolute path, a dataset its paths as written.
    ``size`` and ``mtime_ns`` come from ``os.stat`` (links followed) and are None when it fails (missing file,
    dangling link): such an input fails when read, so no shard or cache is ever written under that key.

    For every regular file both callers hash exactly the bytes they hashed before this function existed, so
    shards and caches written by earlier versions stay valid; ``tests/test_fingerprints.py`` pins them. (Before,
    the CLI wrote -1 for a path it could not stat, and a dataset None for any path that was not a regular file.)

    An object in a store (a URL) is ``{"path", "size", "etag", "version_id"}``
    (:func:`avex_hub.storage.objects.identity`; all None but the path when the store cannot say).
    """
    if is_url(os.fspath(path)):
        try:
            return identity(os.fspath(path))
        except OSError:
            return {"path": os.fspath(path), "size": None, "etag": None, "version_id": None}
    try:
        stat = os.stat(path)
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime_ns = None
    return {"path": os.fspath(path), "size": size, "mtime_ns": mtime_ns}


# -- shards: one file per input, the unit of resumption ---------------------------------------------
def write_shard(target: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """An ``.npz`` of plain arrays plus ``meta`` as a JSON string (no pickled objects)."""
    save_npz(target, {"meta": np.array(json.dumps(meta, sort_keys=True)), **arrays})


def read_shard(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a shard; raises ValueError when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:  # cut short, damaged, not ours
        raise ValueError(f"{path}: unreadable shard ({type(error).__name__}: {error})") from error
    return arrays, meta


# -- shards of an earlier output version ----------------------------------------------------------------
PADDED_VERSION = 2  # the last output version that padded a recording of at most one window to the full window


def earlier_settings(settings: InferenceSettings) -> dict:
    """``settings`` as output version 2 stored them: the key of a shard written by the version before the
    one-window rule (see :func:`carry_over_shard`). Version 2 ran torch only and did not name the runtime: a
    torch run's key leaves it out, another runtime's keeps it (and so never finds a version-2 shard)."""
    stored = {**settings.to_dict(), "output_version": PADDED_VERSION}
    if stored["runtime"] == "torch":
        del stored["runtime"]
    return stored


def carry_over_shard(old: Path, new: Path, settings: InferenceSettings) -> str | None:
    """Keep the version-2 shard at ``old`` as ``new`` under ``settings`` when it holds the values this version
    writes: those of a recording longer than one window (or exactly one window long) did not change. Returns None
    when it was kept, else why the recording is computed again (the old shard is removed either way)."""
    try:
        arrays, meta = read_shard(old)
    except ValueError as error:
        old.unlink(missing_ok=True)
        return str(error)
    if not (arrays["start_s"] > 0).any() and (arrays["end_s"] < settings.window_s).all():
        old.unlink()
        return (f"its result in {old.parent} was written by output version {PADDED_VERSION}, which padded a "
                f"recording of at most one window to the full window; version {settings.output_version} runs it at "
                "its own length")
    write_shard(new, arrays, {**meta, "settings": settings.to_dict()})
    old.unlink()
    return None


# -- text cells -----------------------------------------------------------------------------------------
def text_cell(value: str) -> str:
    """``value`` as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\\xNN`` escapes."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that did not come from os.fsdecode
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _csv_text(value: str) -> str:
    """A text cell for a CSV: UTF-8 safe, and not taken for a formula by a spreadsheet."""
    text = text_cell(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _flag_cell(flags: np.ndarray) -> str:
    return ";".join(name for name, on in zip(FLAG_NAMES, flags) if on)


def _seconds(value) -> str:
    """Seconds in plain decimal notation, as short as round-trips (``1234567.5``, ``0.0000625``, ``10``)."""
    return np.format_float_positional(float(value), trim="-")


# -- combined outputs: the mix's channel is MIX_CHANNEL (-1) in every format ------------------------------
def write_parquet(target: str | os.PathLike, parts: Iterable[tuple[str, dict[str, np.ndarray]]],
                  settings: InferenceSettings, embedding_dim: int, clock=None) -> int:
    """Write embedding rows of ``(file, arrays)`` parts one row group at a time; returns the row count. ``clock``
    (``embed --times``, an :class:`avex_hub.monitoring.recordings.WindowClock`): its columns after ``embedding``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("file", pa.string()), ("channel", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64()),
        ("layer", pa.int16()), *[(name, pa.bool_()) for name in FLAG_NAMES],
        ("embedding", pa.list_(pa.float32(), embedding_dim)), *clock_fields(clock),
    ], metadata={"avex_hub": settings.to_json()})
    rows = 0
    with atomic_path(target, ".parquet") as tmp:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for name, a in parts:
                n = len(a["start_s"])
                flat = pa.array(np.ascontiguousarray(a["embeddings"], dtype=np.float32).reshape(-1))
                columns = [
                    pa.array([text_cell(name)] * n, pa.string()), pa.array(a["channel"], pa.int32()),
                    pa.array(a["start_s"], pa.float64()), pa.array(a["end_s"], pa.float64()),
                    pa.array(a["layer"], pa.int16()),
                    *[pa.array(a["flags"][:, i]) for i in range(len(FLAG_NAMES))],
                    pa.FixedSizeListArray.from_arrays(flat, embedding_dim),
                    *clock_arrays(clock, [name] * n, a["start_s"], a["end_s"]),
                ]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                rows += n
    return rows


def clock_fields(clock) -> list:
    """The Arrow fields of ``clock``'s columns (none without one): text as string, numbers as float64."""
    import pyarrow as pa

    if clock is None:
        return []
    return [pa.field(name, pa.string() if kind is str else pa.float64()) for name, kind in
            zip(clock.columns, clock.kinds)]


def clock_arrays(clock, files: list[str], starts, ends) -> list:
    """The Arrow arrays of ``clock``'s columns for the windows ``files[i]``, ``starts[i]``-``ends[i]`` (none without a
    clock): text as written by :func:`text_cell`, None as null."""
    import pyarrow as pa

    if clock is None:
        return []
    return [pa.array([text_cell(v) if isinstance(v, str) else v for v in values], field.type)
            for values, field in zip(_clock_columns(clock, files, starts, ends), clock_fields(clock))]


def _clock_columns(clock, files, starts, ends) -> list[tuple]:
    """``clock``'s cells of the windows ``files[i]``, ``starts[i]``-``ends[i]``, a tuple per column."""
    cells = [clock(f, float(s), float(e)) for f, s, e in zip(files, starts, ends)]
    return list(zip(*cells)) if cells else [()] * len(clock.columns)


def write_npz(target: str | os.PathLike, parts: Iterable[tuple[str, dict[str, np.ndarray]]],
              settings: InferenceSettings, embedding_dim: int, clock=None) -> int:
    """All embedding rows in one ``.npz`` (held in memory once: embeddings are small next to audio). ``clock``
    (``embed --times``): its columns as arrays, text ``""`` and numbers NaN where unknown."""
    keys = ("channel", "start_s", "end_s", "layer", "flags", "embeddings")
    collected: dict[str, list] = {k: [] for k in keys}
    files: list[str] = []
    for name, a in parts:
        for k in keys:
            collected[k].append(a[k])
        files.extend([name] * len(a["start_s"]))
    empty = {"channel": np.zeros(0, np.int32), "start_s": np.zeros(0), "end_s": np.zeros(0),
             "layer": np.zeros(0, np.int16), "flags": np.zeros((0, len(FLAG_NAMES)), bool),
             "embeddings": np.zeros((0, embedding_dim), np.float32)}
    out = {k: (np.concatenate(v) if v else empty[k]) for k, v in collected.items()}
    if clock is not None:
        columns = _clock_columns(clock, files, out["start_s"], out["end_s"])
        for name, kind, values in zip(clock.columns, clock.kinds, columns):
            out[name] = (np.array([text_cell(v or "") for v in values], dtype=str) if kind is str else
                         np.array([np.nan if v is None else v for v in values], dtype=np.float64))
    save_npz(Path(target), {"file": np.array([text_cell(f) for f in files], dtype=str),
                          "settings": np.array(settings.to_json()), **out})
    return len(files)


def write_csv(target: str | os.PathLike, parts: Iterable[tuple[str, dict[str, np.ndarray]]],
              labels: tuple[str, ...], *, settings: InferenceSettings | None = None, calibration=None,
              clock=None) -> int:
    """Top-k classification rows; returns the number of rows written (top-k per window). ``settings`` (when given) go to the
    sidecar ``<target>.settings.json`` (CSV has no place for them); settings with ``species`` asked write every
    asked label's row per window and no ``rank`` column (the long score table ``avex-hub events`` reads).

    ``calibration`` (an :class:`avex_hub.monitoring.calibration.Thresholds`, with ``species`` asked; refused for
    scores of another model): ``probability`` (calibrated; empty for a label it has no fitted model of) and
    ``detected`` (1 where the written score is at or above the label's threshold, 0 below, empty without one) after
    ``score``. ``clock`` (``classify --times``: ``(file, start_s, end_s) -> cells`` of the window, named by its
    ``columns``: ``start_time``, ``end_time``, ``""`` where the recording's start is unknown, and with a deployments
    table ``site``, ``latitude``, ``longitude``): after ``end_s``."""
    if calibration is not None:
        if not getattr(settings, "species", ()):
            raise ValueError("calibrated columns need the settings of a run with species asked (classify --species)")
        calibration.check_settings(settings.to_dict())
    if settings is not None:
        with atomic_path(f"{target}.settings.json", ".json") as tmp:
            tmp.write_text(json.dumps(settings.to_dict(), sort_keys=True, indent=1) + "\n", encoding="utf-8")
    cells = [_csv_text(label) for label in labels]
    ranked = not getattr(settings, "species", ())
    rows = 0
    with atomic_path(target, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "channel", "start_s", "end_s", *(clock.columns if clock else []),
                             *(["rank"] if ranked else []), "label", "score",
                             *(["probability", "detected"] if calibration is not None else []), "flags"])
            for name, a in parts:
                file_cell = _csv_text(name)
                scores = np.char.mod("%.6f", a["top_scores"])
                extra = _calibrated(a["top_indices"], scores, labels, calibration)
                for i in range(len(a["start_s"])):
                    channel = int(a["channel"][i])
                    start, end, flags = _seconds(a["start_s"][i]), _seconds(a["end_s"][i]), _flag_cell(a["flags"][i])
                    times = _place_cells(clock, name, a["start_s"][i], a["end_s"][i], _csv_text)
                    for j, index in enumerate(a["top_indices"][i]):
                        writer.writerow([file_cell, channel, start, end, *times, *([j + 1] if ranked else []),
                                         cells[index], scores[i, j], *extra[i][j], flags])
                        rows += 1
    return rows


def _place_cells(clock, name: str, start_s: float, end_s: float, text) -> list:
    """The cells of ``clock``'s columns for one window (none without a clock): text through ``text``, None empty."""
    if clock is None:
        return []
    return ["" if v is None else text(v) if isinstance(v, str) else v for v in clock(name, start_s, end_s)]


def _calibrated(indices: np.ndarray, scores: np.ndarray, labels: tuple[str, ...], calibration) -> list:
    """Per window and asked label (the columns of ``indices``, the same in every window): the ``probability`` and
    ``detected`` cells from the written ``scores`` (text); no cells without ``calibration``."""
    n, k = indices.shape
    if calibration is None or not n:
        return [[[]] * k] * n
    columns = []
    for j in range(k):
        label, values = labels[int(indices[0, j])], scores[:, j].astype(np.float64)
        p, detected = calibration.probability(label, values), calibration.detected(label, values)
        columns.append(list(zip([""] * n if p is None else np.char.mod("%.6f", np.atleast_1d(p)).tolist(),
                                [""] * n if detected is None else np.atleast_1d(detected).astype(int).tolist())))
    return [[list(columns[j][i]) for j in range(k)] for i in range(n)]


def _raven_candidates(file: str) -> tuple[str, str]:
    """The two table names an input can get: ``<stem>.Table.1.selections.txt``, and with a path hash on a clash."""
    stem = text_cell(Path(file).stem)
    tag = hashlib.sha256(os.fsencode(os.path.abspath(file))).hexdigest()[:8]
    return f"{stem}.Table.1.selections.txt", f"{stem}_{tag}.Table.1.selections.txt"


def raven_names(files: list[str]) -> dict[str, str]:
    """Selection-table file names per input: ``<stem>.Table.1.selections.txt``, a path hash added on clashes."""
    stems: dict[str, int] = {}
    for f in files:
        stems[Path(f).stem] = stems.get(Path(f).stem, 0) + 1
    return {f: _raven_candidates(f)[stems[Path(f).stem] > 1] for f in files}


def _raven_text(label: str) -> str:
    return text_cell(label).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_raven_tables(folder: str | os.PathLike, parts: Iterable[tuple[str, dict[str, np.ndarray]]],
                       labels: tuple[str, ...], names: dict[str, str], min_score: float = 0.0,
                       clock=None) -> list[Path]:
    """One Raven selection table per input file (header only when no window reaches ``min_score``).

    ``clock`` (``classify --times``; see :func:`write_csv`): its columns after ``Flags`` (``start_time``, ``end_time``
    as in the Raven tables of ``avex-hub events``).

    Parts without quality ``flags`` (search hits and detections read back from an agile database) leave the
    Flags column empty. The input's other possible table name (see :func:`raven_names`) is removed: a table left from a run in
    which its stem clashed with another input's, or did not, would otherwise stand beside the new one.
    """
    written = []
    species = [_raven_text(label) for label in labels]
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
              "High Freq (Hz)", "Species", "Score", "Flags", *(clock.columns if clock else [])]
    for name, a in parts:
        target = Path(folder) / names[name]
        with atomic_path(target, ".txt") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                handle.write("\t".join(header) + "\n")
                selection = 0
                for i in range(len(a["start_s"])):
                    score = float(a["top_scores"][i][0])
                    if score < min_score:
                        continue
                    selection += 1
                    channel = 1 if a["channel"][i] == MIX_CHANNEL else int(a["channel"][i]) + 1
                    fields = [selection, "Spectrogram 1", channel, f"{a['start_s'][i]:.6f}", f"{a['end_s'][i]:.6f}",
                              "0.0", f"{RAVEN_HIGH_FREQ_HZ:.1f}", species[int(a["top_indices"][i][0])], f"{score:.6f}",
                              _flag_cell(a["flags"][i]) if "flags" in a else "",
                              *_place_cells(clock, name, a["start_s"][i], a["end_s"][i], _raven_text)]
                    handle.write("\t".join(str(f) for f in fields) + "\n")
        for other in _raven_candidates(name):
            if other != names[name]:
                (Path(folder) / other).unlink(missing_ok=True)
        written.append(target)
    return written


def write_failures(target: str | os.PathLike, failures: dict[str, str]) -> None:
    """``path,error`` CSV of inputs that could not be processed."""
    with atomic_path(target, ".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"])
            for path, error in failures.items():
                writer.writerow([_csv_text(path), _csv_text(error)])
