"""Outputs of every recording path on the beats-tiny fixture, recorded before and after a change, then compared.

    python benchmarks/pipeline_parity.py record before.npz --data DIR --work WORK   # on the old code
    python benchmarks/pipeline_parity.py record after.npz --data DIR --work WORK2   # on the new code
    python benchmarks/pipeline_parity.py compare before.npz after.npz [--tolerance 1e-6]
    python benchmarks/pipeline_parity.py resume WORK --data DIR                     # old shards on new code

``record`` writes a folder of test audio into ``--data`` (once: later runs reuse the files, so their paths, sizes
and modification times, which name the CLI's shards, stay the same) and records, as named arrays:

- ``avex-hub classify`` and ``avex-hub embed`` (CSV, Parquet, NPZ; ``--layers``, ``--channels``, ``--hop``,
  ``--window``, ``--workers``, ``--precision``): every output row, the settings written with it, the shard names
  in ``<out>.parts/``, the failure report and the exit code;
- ``model.predict`` and ``model.embed`` on every file and on arrays (``per_window``, ``channels="all"``);
- Lightning prediction (``window_dataset`` + ``extract_embeddings_distributed`` on the CPU);
- ``avex-hub index`` (every window's file, channel, span and vector) and ``avex-hub search``'s hits.

The folder holds a 25 s 16 kHz mono WAV, a 12 s 44.1 kHz stereo FLAC, a 14 s 32 kHz WAV, a 75 s 22.05 kHz FLAC (two
streaming blocks), a 10 s 48 kHz WAV (exactly one window), recordings shorter than a window (1 s mono, 3 s stereo),
one shorter than the model's minimum input (0.1 s) and a file that does not decode. ``compare`` prints every key
whose values differ by more than the tolerance (numbers) or at all (text), and exits 1 if any does. ``resume``
re-runs the CLI commands of a ``record`` work folder (a copy of it is made) and prints how many files each run
took from the shards written by the code that recorded it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "tests" / "fixtures" / "beats-tiny"

# name -> (seconds, sample rate, channels, format)
FILES = {
    "a_mono16k_25s.wav": (25.0, 16000, 1, "WAV"),
    "b_stereo44k_12s.flac": (12.0, 44100, 2, "FLAC"),
    "c_rate32k_14s.wav": (14.0, 32000, 1, "WAV"),
    "d_short_1s.wav": (1.0, 16000, 1, "WAV"),
    "e_long_75s.flac": (75.0, 22050, 1, "FLAC"),
    "f_exact_10s.wav": (10.0, 48000, 1, "WAV"),
    "g_stereo_short_3s.wav": (3.0, 48000, 2, "WAV"),
    "h_tiny_0.1s.wav": (0.1, 16000, 1, "WAV"),
}
BROKEN = "z_broken.wav"

# (name, arguments after the command's PATH and --out)
CLI_RUNS = [
    ("classify_csv", ["classify", "c1.csv", "--top-k", "3", "--raven", "raven"]),
    ("classify_all_hop4", ["classify", "c2.csv", "--channels", "all", "--hop", "4"]),
    ("classify_window5_workers2", ["classify", "c3.csv", "--window", "5", "--hop", "2.5", "--workers", "2",
                                   "--batch-size", "3"]),
    ("classify_int8", ["classify", "c4.csv", "--precision", "int8", "--top-k", "7"]),
    ("embed_parquet", ["embed", "e1.parquet"]),
    ("embed_npz_layers_all_channels", ["embed", "e2.npz", "--layers", "1,3", "--channels", "all"]),
    ("embed_parquet_every_layer_hop6_max", ["embed", "e3.parquet", "--layers", "all", "--hop", "6",
                                            "--pooling", "max"]),
    ("embed_channel1", ["embed", "e4.npz", "--channels", "1"]),
    ("embed_bf16_batch1", ["embed", "e5.npz", "--precision", "bf16", "--batch-size", "1"]),
]


def make_data(folder: Path) -> None:
    """The test recordings: tones below 6 kHz with a little noise, deterministic; written once."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (seconds, rate, channels, fmt)) in enumerate(sorted(FILES.items())):
        if (folder / name).exists():
            continue
        rng = np.random.default_rng(i)
        t = np.arange(round(seconds * rate)) / rate
        audio = np.zeros((t.size, channels), np.float32)
        for c in range(channels):
            for f in rng.uniform(200, 6000, size=4):
                audio[:, c] += 0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * (1 + np.sin(2 * np.pi * t))
            audio[:, c] += 0.01 * rng.standard_normal(t.size)
        sf.write(folder / name, audio, rate, format=fmt, subtype="PCM_16")
    if not (folder / BROKEN).exists():
        (folder / BROKEN).write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunk" + bytes(range(256)) * 4)


# -- what is recorded --------------------------------------------------------------------------------------------
def _rel(path: str, data: Path) -> str:
    return os.path.relpath(os.path.abspath(path), data)


def _cli(args: list[str]) -> int:
    from avex_hub.cli import main

    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(args)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _table(rows: list[dict], data: Path, prefix: str, out: dict) -> None:
    """CSV rows as columns: numbers as float64 arrays, text as str arrays (file names relative to ``data``)."""
    if not rows:
        out[f"{prefix}/rows"] = np.array(0)
        return
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key in ("file", "path"):
            out[f"{prefix}/{key}"] = np.array([_rel(v, data) for v in values])
            continue
        try:
            out[f"{prefix}/{key}"] = np.array([float(v) for v in values])
        except ValueError:
            out[f"{prefix}/{key}"] = np.array(values)


def _settings_text(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True)


def record_cli(data: Path, work: Path, out: dict) -> None:
    for name, (command, target, *rest) in ((n, a) for n, a in CLI_RUNS):
        extra = [str(work / a) if a == "raven" else a for a in rest]
        code = _cli([command, str(data), "--out", str(work / target), "--checkpoint", str(TINY), "--device", "cpu",
                     "--no-progress", *extra])
        key = f"cli/{name}"
        out[f"{key}/exit_code"] = np.array(code)
        parts = work / f"{target}.parts"
        out[f"{key}/shards"] = np.array(sorted(p.name for p in parts.glob("*.npz")))
        failures = Path(f"{work / target}.failures.csv")
        if failures.exists():
            rows = _read_csv(failures)
            out[f"{key}/failures/path"] = np.array([_rel(r["path"], data) for r in rows])
            out[f"{key}/failures/error_kind"] = np.array([r["error"].split(":")[0] for r in rows])
        path = work / target
        if target.endswith(".csv"):
            _table(_read_csv(path), data, f"{key}/rows", out)
            out[f"{key}/settings"] = np.array(Path(f"{path}.settings.json").read_text(encoding="utf-8"))
        elif target.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            out[f"{key}/settings"] = np.array(table.schema.metadata[b"avex_hub"].decode())
            for column in table.column_names:
                values = table.column(column).to_pylist()
                out[f"{key}/rows/{column}"] = (np.array([_rel(v, data) for v in values]) if column == "file"
                                               else np.array(values))
        else:
            with np.load(path, allow_pickle=False) as npz:
                for k in npz.files:
                    out[f"{key}/rows/{k}"] = (np.array([_rel(v, data) for v in npz[k]]) if k == "file"
                                              else npz[k])
        if "--raven" in rest:
            for table_path in sorted((work / "raven").glob("*.txt")):
                out[f"{key}/raven/{table_path.name}"] = np.array(table_path.read_text(encoding="utf-8"))


def _predictions(answer, prefix: str, out: dict) -> None:
    out[f"{prefix}/label"] = np.array([p.label for p in answer])
    out[f"{prefix}/score"] = np.array([p.score for p in answer])
    out[f"{prefix}/start_s"] = np.array([p.start_s for p in answer])
    out[f"{prefix}/end_s"] = np.array([p.end_s for p in answer])


def _attempt(call, prefix: str, out: dict):
    """``call()``, or the kind of error it raised recorded under ``prefix/error``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except (ValueError, TypeError) as error:
        out[f"{prefix}/error"] = np.array(type(error).__name__)
        return None


def record_model(model, data: Path, out: dict) -> None:
    import soundfile as sf
    import torch

    for name in FILES:
        path = str(data / name)
        key = f"model/{name}"
        answer = _attempt(lambda: model.predict(path, top_k=3), f"{key}/predict", out)
        if answer is not None:
            _predictions(answer, f"{key}/predict", out)
        rows = _attempt(lambda: model.predict(path, top_k=2, per_window=True), f"{key}/predict_per_window", out)
        if rows is not None:
            _predictions(rows, f"{key}/predict_per_window", out)
        vector = _attempt(lambda: model.embed(path), f"{key}/embed", out)
        if vector is not None:
            out[f"{key}/embed"] = vector.numpy()
        windows = _attempt(lambda: model.embed(path, per_window=True, layer=1, pooling="max"),
                           f"{key}/embed_per_window", out)
        if windows is not None:
            out[f"{key}/embed_per_window/embeddings"] = windows.embeddings.numpy()
            out[f"{key}/embed_per_window/start_s"] = windows.start_s.numpy()
            out[f"{key}/embed_per_window/end_s"] = windows.end_s.numpy()
        if FILES[name][2] == 2:
            for i, answer in enumerate(model.predict(path, top_k=3, channels="all")):
                _predictions(answer, f"{key}/predict_channel{i}", out)
            out[f"{key}/embed_all_channels"] = model.embed(path, channels="all", clip_pooling="max").numpy()
            array, rate = sf.read(path, dtype="float32", always_2d=True)
            out[f"{key}/embed_array_all_channels"] = model.embed(array.T, sample_rate=rate, channels="all").numpy()
        elif FILES[name][0] >= 1:
            array, rate = sf.read(path, dtype="float32")
            _predictions(model.predict(array, rate, top_k=3), f"{key}/predict_array", out)
            out[f"{key}/embed_tensor"] = model.embed(torch.from_numpy(array), sample_rate=rate).numpy()


def record_lightning(model, data: Path, work: Path, out: dict) -> None:
    from avex_hub.integrations.lightning import extract_embeddings_distributed, window_dataset

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        windows = window_dataset(str(data), window_s=10.0)
        out["lightning/items/file"] = np.array([_rel(str(i.path), data) for i in windows.items])
        out["lightning/items/start_s"] = np.array([i.start_s for i in windows.items])
        out["lightning/items/end_s"] = np.array([i.end_s for i in windows.items])
        merged = extract_embeddings_distributed(model, windows, work / "lightning", layers=[1, 3], batch_size=2,
                                                accelerator="cpu", devices=1, enable_progress_bar=False)
    for key, value in merged.tensors.items():
        out[f"lightning/{key}"] = value.numpy()
    out["lightning/failures"] = np.array(sorted(_rel(p, data) for p in merged.failures))


def record_index(data: Path, work: Path, out: dict) -> None:
    from perch_hoplite.db import sqlite_usearch_impl

    db = work / "archive"
    common = ["--checkpoint", str(TINY), "--device", "cpu", "--no-progress"]
    out["index/exit_code"] = np.array(_cli(["index", str(data), "--db", str(db), *common]))
    with contextlib.closing(sqlite3.connect(db / sqlite_usearch_impl.HOPLITE_FILENAME)) as connection:
        rows = connection.execute(
            "SELECT windows.id, recordings.filename, windows.channel, windows.offsets FROM windows "
            "JOIN recordings ON windows.recording_id = recordings.id ORDER BY recordings.filename, windows.channel, "
            "windows.id").fetchall()
    hoplite = sqlite_usearch_impl.SQLiteUSearchDB.create(str(db), readonly=True)
    ids = np.array([r[0] for r in rows], np.int64)
    offsets = [np.frombuffer(r[3], np.float32) if isinstance(r[3], bytes) else np.asarray(r[3]) for r in rows]
    out["index/file"] = np.array([_rel(r[1], data) for r in rows])
    out["index/channel"] = np.array([r[2] for r in rows])
    out["index/offsets"] = np.array([np.asarray(o, np.float64)[:2] for o in offsets])
    out["index/vectors"] = np.asarray(hoplite.get_embeddings_batch(ids), np.float32)
    hits = work / "hits.csv"
    out["search/exit_code"] = np.array(_cli(["search", "--db", str(db), "--query",
                                             f"{data / 'a_mono16k_25s.wav'}:2-7", "--query",
                                             f"{data / 'd_short_1s.wav'}", "--out", str(hits), "--top", "20",
                                             *common]))
    rows = _read_csv(hits)
    _table([{k: v for k, v in r.items() if k != "window_id"} for r in rows], data, "search/hits", out)


def record(target: Path, data: Path, work: Path) -> None:
    import torch

    from avex_hub import build_model

    torch.manual_seed(0)
    make_data(data)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    record_cli(data, work, out)
    model = build_model("esp_aves2_sl_beats_all", checkpoint=TINY)
    record_model(model, data, out)
    record_lightning(model, data, work, out)
    try:
        import perch_hoplite  # noqa: F401
    except ImportError:
        print("perch-hoplite is not installed: index and search not recorded", file=sys.stderr)
    else:
        record_index(data, work, out)
    np.savez(target, **out)
    print(f"recorded {len(out)} arrays to {target}")


# -- comparing ----------------------------------------------------------------------------------------------------
def _window_of(arrays: dict, group: str) -> float:
    """The window length of a recorded run: from its settings, else 10 s."""
    text = arrays.get(f"{group}/settings")
    return float(json.loads(str(text))["window_s"]) if text is not None else 10.0


def _short_rows(arrays: dict, group: str) -> np.ndarray | None:
    """Which rows of a table belong to recordings no longer than its run's window (None: not a table of files)."""
    column = next((arrays[k] for k in (f"{group}/rows/file", f"{group}/file", f"{group}/items/file", f"{group}/hits/file")
                   if k in arrays), None)
    if column is None:
        return None
    window = _window_of(arrays, group)
    return np.array([FILES.get(str(name), (0.0,))[0] <= window + 1e-9 for name in column])


def _group(key: str) -> str:
    parts = key.split("/")
    return "/".join(parts[:2]) if parts[0] == "cli" else parts[0]


def compare(before: Path, after: Path, tolerance: float, rule: bool = False) -> int:
    """Every array equal (numbers to ``tolerance``). With ``rule``: the changes the one-window rule makes are set
    apart (rows of recordings no longer than the run's window, the output version in the settings and the shard
    names it keys, search scores from short query clips), and everything else must be equal."""
    with np.load(before, allow_pickle=False) as a, np.load(after, allow_pickle=False) as b:
        first, second = {k: a[k] for k in a.files}, {k: b[k] for k in b.files}
    problems, allowed = [], []
    for key in sorted(set(first) | set(second)):
        if key not in first or key not in second:
            problems.append(f"{key}: only {'before' if key in first else 'after'}")
            continue
        x, y = first[key], second[key]
        short = _short_rows(first, _group(key)) if rule else None
        if rule and key.endswith("/settings"):
            old, new = json.loads(str(x)), json.loads(str(y))
            if {**old, "output_version": 0} == {**new, "output_version": 0}:
                if old != new:
                    allowed.append(f"{key}: output_version {old['output_version']} -> {new['output_version']}")
                continue
        if rule and key.endswith("/shards") and x.shape == y.shape:
            allowed.append(f"{key}: {len(x)} shards, named by the new output version")
            continue
        if rule and "/raven/" in key and FILES.get(key.rsplit("/", 1)[1].split(".Table")[0] + ".wav", (99,))[0] <= 10:
            allowed.append(f"{key}: a recording of at most one window")
            continue
        if rule and key == "search/hits/score":
            allowed.append(f"{key}: max |difference| {np.max(np.abs(x - y)):.3g} (both query clips are at most one "
                           "window long)")
            continue
        if x.shape != y.shape:
            problems.append(f"{key}: shape {x.shape} before, {y.shape} after")
            continue
        numeric = x.dtype.kind in "fiub" and y.dtype.kind in "fiub"
        rows = short is not None and x.ndim >= 1 and len(x) == len(short)
        if rows and short.any():
            keep = ~short
            diff_short = _difference(x[short], y[short], numeric)
            if diff_short:
                allowed.append(f"{key}: {diff_short} in the {int(short.sum())} rows of recordings at most one window")
            x, y = x[keep], y[keep]
        diff = _difference(x, y, numeric, tolerance)
        if diff:
            problems.append(f"{key}: {diff}")
    print(f"{len(set(first) & set(second))} arrays compared at tolerance {tolerance:g}; {len(problems)} differ"
          + (":" if problems else ""))
    for line in problems:
        print(f"  {line}")
    if allowed:
        print(f"changes the one-window rule makes ({len(allowed)}):")
        for line in allowed:
            print(f"  {line}")
    return 1 if problems else 0


def _difference(x: np.ndarray, y: np.ndarray, numeric: bool, tolerance: float = 0.0) -> str:
    """'' when equal (numbers to ``tolerance``), else how they differ."""
    if numeric:
        diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
        return "" if diff <= tolerance else f"max |difference| {diff:.3g}"
    return "" if np.array_equal(x, y) else "text differs"


def resume(work: Path, data: Path) -> int:
    """Re-run the CLI commands of a recorded work folder (on a copy) and report which files came from shards."""
    copy = Path(tempfile.mkdtemp(prefix="parity-resume-")) / "work"
    shutil.copytree(work, copy)
    for name, (command, target, *rest) in CLI_RUNS:
        extra = [str(copy / a) if a == "raven" else a for a in rest]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from avex_hub.cli import main

            code = main([command, str(data), "--out", str(copy / target), "--checkpoint", str(TINY), "--device",
                         "cpu", *extra])
        lines = [line for line in stderr.getvalue().splitlines()
                 if "already done" in line or "recomputing" in line or "wrote" in line]
        print(f"{name}: exit {code}")
        for line in lines:
            print(f"    {line.strip()[:300]}")
    shutil.rmtree(copy.parent)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("target", type=Path)
    rec.add_argument("--data", type=Path, required=True)
    rec.add_argument("--work", type=Path, required=True)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--tolerance", type=float, default=1e-6)
    cmp.add_argument("--one-window-rule", action="store_true",
                     help="set apart what the one-window rule changes; everything else must be equal")
    res = sub.add_parser("resume")
    res.add_argument("work", type=Path)
    res.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "record":
        record(args.target, args.data, args.work)
        return 0
    if args.command == "compare":
        return compare(args.before, args.after, args.tolerance, args.one_window_rule)
    return resume(args.work, args.data)


if __name__ == "__main__":
    sys.exit(main())
