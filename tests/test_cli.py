"""The avex-hub command line: folders of mixed files, outputs read back, resumption, failures, cache commands."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.embed import outputs
from avex_hub.audio.decoding import audio_info
from avex_hub.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main

from conftest import populate_hub_cache, tones

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "beats-tiny")
QUIET = ["--checkpoint", TINY, "--workers", "0", "--no-progress"]




@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Several rates and formats, stereo, a corrupt file, a 0-byte file and a 3-minute recording."""
    root = tmp_path_factory.mktemp("mixed")
    sf.write(root / "a_mono16k.wav", tones(12, 16000, seed=1), 16000, subtype="FLOAT")
    sf.write(root / "b_stereo44k.flac", tones(8, 44100, channels=2, seed=2), 44100)
    sf.write(root / "c_clip48k.ogg", tones(6, 48000, seed=3), 48000, format="OGG", subtype="VORBIS")
    sf.write(root / "d_hires96k.wav", tones(5, 96000, seed=4), 96000)
    (root / "e_corrupt.wav").write_bytes(np.random.default_rng(5).bytes(4096))
    (root / "f_empty.flac").write_bytes(b"")
    sub = root / "night"
    sub.mkdir()
    sf.write(sub / "g_long8k.wav", tones(180, 8000, seed=6), 8000)
    good = [root / "a_mono16k.wav", root / "b_stereo44k.flac", root / "c_clip48k.ogg", root / "d_hires96k.wav",
            sub / "g_long8k.wav"]
    return {"root": root, "good": [str(p) for p in good],
            "bad": [str(root / "e_corrupt.wav"), str(root / "f_empty.flac")]}


@pytest.fixture(scope="module")
def embedded(mixed, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "emb.parquet"
    code = main(["embed", str(mixed["root"]), "--out", str(out), "--channels", "all", *QUIET])
    return code, out


def read_parquet(path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def small_folder(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"clip{i}.wav", tones(3 + i, 16000, seed=20 + i), 16000, subtype="FLOAT")
    return root


def test_embed_mixed_folder_writes_every_good_file_and_reports_the_bad(tiny_model, mixed, embedded):
    code, out = embedded
    assert code == EXIT_PARTIAL
    table = read_parquet(out)
    assert [f.name for f in table.schema] == ["file", "channel", "start_s", "end_s", "layer", "clipped", "silent",
                                             "too_short", "truncated", "embedding"]
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[64]"
    settings = json.loads(table.schema.metadata[b"avex_hub"])
    assert settings["window_s"] == 10.0 and settings["channels"] == "all" and settings["layers"] == [3]
    rows = table.to_pydict()
    assert list(dict.fromkeys(rows["file"])) == mixed["good"]  # input order; no failed file
    for path in mixed["good"]:
        info = audio_info(path)
        mine = [i for i, f in enumerate(rows["file"]) if f == path]
        windows = math.ceil(round(info.duration_s * 16000) / 160000)
        assert len(mine) == windows * info.channels, path
        assert [rows["channel"][i] for i in mine] == list(range(info.channels)) * windows
        assert [rows["start_s"][i] for i in mine] == [10.0 * k for k in range(windows) for _ in range(info.channels)]
        assert rows["end_s"][mine[-1]] == pytest.approx(info.duration_s, abs=1e-3)
    # values: the 16 kHz file's windows through model.embed directly
    data, _ = sf.read(mixed["good"][0], dtype="float32")
    audio, mask = torch.zeros(2, 160000), torch.ones(2, 160000, dtype=torch.bool)
    audio[0], mask[0] = torch.from_numpy(data[:160000]), False
    audio[1, :32000], mask[1, :32000] = torch.from_numpy(data[160000:]), False
    with torch.inference_mode():
        expected = tiny_model.embed(audio, mask).numpy()
    got = np.array([rows["embedding"][i] for i, f in enumerate(rows["file"]) if f == mixed["good"][0]])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    with open(f"{out}.failures.csv", newline="") as handle:
        report = list(csv.DictReader(handle))
    assert [r["path"] for r in report] == mixed["bad"]
    assert "empty" in report[1]["error"] and "AudioDecodeError" in report[0]["error"]


def test_rerun_processes_nothing_new(mixed, embedded, monkeypatch):
    import avex_hub.embed.inference as inference

    code, out = embedded
    before = read_parquet(out)
    shards = sorted(Path(f"{out}.parts").iterdir())
    assert len(shards) == len(mixed["good"])
    stamps = [s.stat().st_mtime_ns for s in shards]
    seen = []
    real = inference.iter_file_results

    def spy(model, paths, *args, **kwargs):
        seen.append(list(paths))
        return real(model, paths, *args, **kwargs)

    monkeypatch.setattr(inference, "iter_file_results", spy)
    assert main(["embed", str(mixed["root"]), "--out", str(out), "--channels", "all", *QUIET]) == EXIT_PARTIAL
    assert seen == [mixed["bad"]]  # only the failed inputs are tried again
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    assert read_parquet(out).equals(before)


def test_interrupted_run_keeps_finished_files_and_resumes(tiny_model, tmp_path, monkeypatch):
    folder = small_folder(tmp_path / "in")
    out, reference = tmp_path / "out.parquet", tmp_path / "reference.parquet"
    args = ["embed", str(folder), "--window", "2", *QUIET]
    assert main([*args, "--out", str(reference)]) == EXIT_OK
    real, calls = outputs.write_shard, []

    def crash_after_first(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(a[0])
        real(*a, **k)

    monkeypatch.setattr(outputs, "write_shard", crash_after_first)
    assert main([*args, "--out", str(out)]) == EXIT_INTERRUPTED
    assert not out.exists()
    assert [p.name for p in Path(f"{out}.parts").iterdir()] == [calls[0].name]  # no temporary file left behind
    written = []
    monkeypatch.setattr(outputs, "write_shard", lambda *a, **k: (written.append(a[0]), real(*a, **k)))
    assert main([*args, "--out", str(out)]) == EXIT_OK
    assert len(written) == 2 and calls[0] not in written
    assert read_parquet(out).equals(read_parquet(reference))


def test_fixed_input_is_picked_up_and_the_report_cleared(tmp_path):
    folder = small_folder(tmp_path / "in", n=2)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]) == EXIT_PARTIAL
    assert Path(f"{out}.failures.csv").exists()
    sf.write(folder / "broken.wav", tones(2, 16000), 16000)
    assert main(["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]) == EXIT_OK
    assert not Path(f"{out}.failures.csv").exists()
    assert len(set(read_parquet(out).column("file").to_pylist())) == 3


def test_classify_csv_and_raven_tables(tiny_model, mixed, tmp_path):
    out, raven = tmp_path / "species.csv", tmp_path / "raven"
    args = ["classify", str(mixed["root"]), "--out", str(out), "--top-k", "3", "--raven", str(raven), *QUIET]
    assert main([*args, "--min-score", "0"]) == EXIT_PARTIAL
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "channel", "start_s", "end_s", "rank", "label", "score", "flags"]
    windows: dict[tuple, list] = {}
    for r in rows:
        windows.setdefault((r["file"], r["channel"], float(r["start_s"])), []).append(r)
    for group in windows.values():
        assert [int(r["rank"]) for r in group] == [1, 2, 3]
        scores = [float(r["score"]) for r in group]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert len(windows) == 2 + 1 + 1 + 1 + 18  # mixed to mono: 12 s, 8 s, 6 s, 5 s, 180 s at 10 s windows
    data, _ = sf.read(mixed["good"][0], dtype="float32")
    with torch.inference_mode():
        logits = tiny_model.logits(torch.from_numpy(data[:160000])[None])
    top = torch.sigmoid(logits)[0].topk(3)
    assert {r["channel"] for r in rows} == {"-1"}  # the mono mix, as in every output format
    first = windows[(mixed["good"][0], "-1", 0.0)]
    assert [r["label"] for r in first] == [tiny_model.labels[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([float(r["score"]) for r in first], top.values.numpy(), atol=1e-5)

    threshold = float(np.median([float(g[0]["score"]) for g in windows.values()]))
    assert main([*args, "--min-score", str(threshold)]) == EXIT_PARTIAL  # re-merge only; shards are reused
    tables = sorted(raven.iterdir())
    assert [t.name for t in tables] == sorted(Path(p).stem + ".Table.1.selections.txt" for p in mixed["good"])
    for path in mixed["good"]:
        lines = (raven / (Path(path).stem + ".Table.1.selections.txt")).read_text().splitlines()
        assert lines[0].split("\t") == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                                        "Low Freq (Hz)", "High Freq (Hz)", "Species", "Score", "Flags"]
        kept = [g[0] for (f, _, _), g in windows.items() if f == path and float(g[0]["score"]) >= threshold]
        fields = [line.split("\t") for line in lines[1:]]
        assert [int(f[0]) for f in fields] == list(range(1, len(kept) + 1))
        assert [(f[2], float(f[3]), f[7]) for f in fields] == [("1", float(r["start_s"]), r["label"]) for r in kept]


def test_npz_output_matches_the_api(tiny_model, tmp_path):
    from avex_hub.embed.inference import embed_files

    folder = small_folder(tmp_path / "in")
    out = tmp_path / "emb.npz"
    assert main(["embed", str(folder), "--out", str(out), "--window", "2", "--layers", "1,-1", "--format", "npz",
                 *QUIET]) == EXIT_OK
    with np.load(out, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    api = embed_files(tiny_model, folder, window_s=2, layers=[1, -1], num_workers=0, progress=False)
    assert arrays["embeddings"].shape == (len(api), 64) and len(api) == 2 * (2 + 2 + 3)  # 3 s, 4 s, 5 s clips
    np.testing.assert_allclose(arrays["embeddings"], api.embeddings, atol=1e-6)
    np.testing.assert_array_equal(arrays["file"], api.file)
    np.testing.assert_array_equal(arrays["layer"], [1, 3] * 7)
    np.testing.assert_array_equal(arrays["channel"], -1)
    assert arrays["flags"].shape == (14, 4)
    assert json.loads(str(arrays["settings"]))["layers"] == [1, 3]


@pytest.mark.parametrize("argv, message", [
    (["embed", "--out", "e.csv"], "--out {out}: embed writes .parquet or .npz files (the extension sets the format), "
                                  "found .csv; name it e.parquet or e.npz"),
    (["embed", "--out", "e.txt", "--format", "npz"], "found .txt; name it e.parquet or e.npz"),
    (["embed", "--out", "embeddings"], "found no extension; name it embeddings.parquet or embeddings.npz"),
    (["embed", "--out", "e.npz", "--format", "parquet"], "--format parquet disagrees with --out {out}, which names a "
                                                          ".npz (npz) file; drop --format or name the file e.parquet"),
    (["classify", "--out", "c.parquet"], "--out {out}: classify writes .csv files (the extension sets the format), "
                                         "found .parquet; name it c.csv"),
    (["classify", "--out", "c.npz"], "found .npz; name it c.csv"),
])
def test_the_out_extension_sets_the_format_or_is_refused(tmp_path, capsys, monkeypatch, argv, message):
    """embed --out e.csv wrote Parquet into a .csv file, classify --out c.parquet wrote CSV: now exit code 2 and one
    line, before any work (no weights loaded, nothing written)."""
    import avex_hub.hub.loading as loading

    folder = small_folder(tmp_path / "in", n=1)
    out = tmp_path / argv[2]
    monkeypatch.setattr(loading, "build_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    assert main([argv[0], str(folder), "--out", str(out), *argv[3:], *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("avex-hub: error: --") and err.endswith(f"{message.format(out=out)}\n")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_the_format_table_is_in_the_help():
    from avex_hub.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert "extension sets the format (embed: .parquet or .npz; classify: .csv; others are refused)" in \
        " ".join(commands["classify"].format_help().split())
    assert "it must agree with the --out extension (.parquet: parquet, .npz: npz)" in \
        " ".join(commands["embed"].format_help().split())


@pytest.mark.parametrize("layers, message", [
    ("1,1", "--layers 1,1 names layer 1 more than once (the model's layers are 0..3, and -1 is 3)"),
    ("-1,3", "--layers -1,3 names layer 3 more than once"),
    ("0,2,-4,-2,1", "--layers 0,2,-4,-2,1 names layer 0, 2 more than once"),
])
def test_a_layer_named_twice_is_refused(tmp_path, capsys, layers, message):
    """--layers 1,1 wrote every row twice; -1,3 on the 3-layer fixture names one layer twice as well."""
    folder = small_folder(tmp_path / "in", n=1)
    out = tmp_path / "e.npz"
    assert main(["embed", str(folder), "--out", str(out), f"--layers={layers}", *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"avex-hub: error: {message}") and err.endswith("; give each layer once\n")
    assert err.count("\n") == 1
    assert not out.exists() and list(Path(f"{out}.parts").iterdir()) == []  # no audio was read


def test_warnings_reach_the_terminal_as_one_line_each(tmp_path):
    """A 48 kHz recording with most of its energy above 8 kHz, in a real process, decoded in the main process and in
    a worker: the warning is one line (Python's format printed the path and line of the code that warned, then its
    ``warnings.warn(`` source line)."""
    folder = tmp_path / "in"
    folder.mkdir()
    t = np.arange(3 * 48000) / 48000
    sf.write(folder / "bats48k.wav", (0.3 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32), 48000)
    for workers in ("0", "1"):
        run = subprocess.run([sys.executable, "-m", "avex_hub.cli", "embed", str(folder), "--out",
                              str(tmp_path / f"e{workers}.npz"), "--checkpoint", TINY, "--workers", workers,
                              "--no-progress"], capture_output=True, text=True, timeout=300)
        assert run.returncode == EXIT_OK, run.stderr
        lines = run.stderr.splitlines()
        assert [line for line in lines if "resampling" in line] == [
            f"avex-hub: warning: {folder / 'bats48k.wav'}: resampling from 48000 Hz to 16000 Hz removes everything "
            "above 8 kHz, which held 100.0% of the signal energy. The model hears only 0-8 kHz, so ultrasonic or "
            "high-pitched sounds will look like silence to it. If they matter, time-expand the recording (pass the "
            "array with a lower sample_rate, e.g. rate / 10) or use a model made for ultrasonic audio."], workers
        assert all(line.startswith("avex-hub: ") for line in lines), lines
        assert "warnings.warn(" not in run.stderr and ".py:" not in run.stderr


def test_the_warning_format_is_the_commands_alone(tmp_path, capsys):
    """Installed by main for the command's duration only: not at import, and restored after success or failure."""
    import warnings

    code = "import warnings, avex_hub.cli; print(warnings.formatwarning.__module__)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert imported.stdout == "warnings\n", imported.stderr
    before = warnings.formatwarning
    during = []
    folder = small_folder(tmp_path / "in", n=1)
    import avex_hub.embed.inference as inference

    real = inference.iter_file_results

    def spy(*args, **kwargs):
        during.append(warnings.formatwarning)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "iter_file_results", spy)
        assert main(["embed", str(folder), "--out", str(tmp_path / "e.npz"), *QUIET]) == EXIT_OK
    assert [f("message", UserWarning, "x.py", 1) for f in during] == ["avex-hub: warning: message\n"]
    assert warnings.formatwarning is before
    assert main(["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "f.npz"), *QUIET]) == EXIT_USAGE
    assert warnings.formatwarning is before
    capsys.readouterr()


def test_layers_option_and_no_other_name(capsys):
    """--layers is the option's one name: --layer (its name before lists) is refused, also as an abbreviation."""
    from avex_hub.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["embed", "in", "--out", "e.npz"]).layers == -1
    assert parse(["embed", "in", "--out", "e.npz", "--layers", "6,-1"]).layers == [6, -1]
    assert parse(["embed", "in", "--out", "e.npz", "--layers", "all"]).layers == "all"
    assert capsys.readouterr().err == ""
    assert main(["embed", "in", "--out", "e.npz", "--layer", "1,-1"]) == EXIT_USAGE
    assert "unrecognized arguments: --layer (values not shown" in capsys.readouterr().err
    embed_help = build_parser()._subparsers._group_actions[0].choices["embed"].format_help()
    assert "--layers LAYERS" in embed_help and "--layer " not in embed_help


def _parts(channels: list[list[int]], k: int = 2):
    """Classification/embedding shard arrays of files with the given per-window channels."""
    for f, chans in enumerate(channels):
        n = len(chans)
        yield f"f{f}.wav", {"channel": np.array(chans, np.int32), "start_s": np.arange(n, dtype=float),
                            "end_s": np.arange(n, dtype=float) + 1, "layer": np.full(n, 3, np.int16),
                            "flags": np.zeros((n, len(outputs.FLAG_NAMES)), bool), "embeddings": np.ones((n, 4), np.float32),
                            "top_indices": np.tile(np.arange(k, dtype=np.int32), (n, 1)),
                            "top_scores": np.tile(np.linspace(0.9, 0.5, k, dtype=np.float32), (n, 1))}


def test_every_format_writes_minus_one_for_the_mix_and_counts_rows(tmp_path, tiny_model):
    import pyarrow.parquet as pq

    from avex_hub.embed.inference import inference_settings

    channels = [[-1, -1, -1], [0, 1, 0, 1], [-1]]  # 8 windows in 3 files
    rows = outputs.write_csv(tmp_path / "c.csv", _parts(channels, k=2), ("a", "b"))
    with open(tmp_path / "c.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert rows == len(written) == 16  # top-2 rows per window (counted files before: 3)
    assert [r["channel"] for r in written] == [str(c) for chans in channels for c in chans for _ in range(2)]
    settings = inference_settings(tiny_model, "embed")
    assert outputs.write_parquet(tmp_path / "e.parquet", _parts(channels), settings, 4) == 8
    assert pq.read_table(tmp_path / "e.parquet").column("channel").to_pylist() == sum(channels, [])  # no nulls
    assert outputs.write_npz(tmp_path / "e.npz", _parts(channels), settings, 4) == 8
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["channel"].tolist() == sum(channels, [])


def test_classify_species_writes_every_asked_score_that_events_reads(tiny_model, tmp_path, capsys):
    """--species A,B: one row per window and asked label, no rank; the table reads back as monitoring's scores with
    the weights digest; a misspelt name or --raven beside it is a usage error before any work."""
    from avex_hub.monitoring.scores import read_scores

    folder = small_folder(tmp_path / "in")  # 3 s, 4 s, 5 s at 2 s windows: 2 + 2 + 3 windows
    out, topk = tmp_path / "scores.csv", tmp_path / "all.csv"
    common = [str(folder), "--window", "2", *QUIET]
    assert main(["classify", *common, "--out", str(out), "--species", "Parus major,Turdus merula"]) == EXIT_OK
    assert main(["classify", *common, "--out", str(topk), "--top-k", "7"]) == EXIT_OK
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "channel", "start_s", "end_s", "label", "score", "flags"]
    assert [r["label"] for r in rows] == ["Parus major", "Turdus merula"] * 7
    with open(topk, newline="") as handle:
        every = {(r["file"], r["start_s"], r["label"]): r["score"] for r in csv.DictReader(handle)}
    assert all(every[(r["file"], r["start_s"], r["label"])] == r["score"] for r in rows)
    table = read_scores(out)
    assert table.labels == ["Parus major", "Turdus merula"] and len(table) == 7
    assert table.source.weights_sha256 == tiny_model.weights_sha256
    capsys.readouterr()
    listed = tmp_path / "species.txt"
    listed.write_text("# one a line\nParus major\n\nTurdus merula\n", encoding="utf-8")
    assert main(["classify", *common, "--out", str(tmp_path / "listed.csv"), "--species", str(listed)]) == EXIT_OK
    assert (tmp_path / "listed.csv").read_text() == out.read_text()
    capsys.readouterr()
    assert main(["classify", *common, "--out", str(tmp_path / "x.csv"), "--species", "Parus majr"]) == EXIT_USAGE
    assert "did you mean 'Parus major'?" in capsys.readouterr().err
    listed.write_text("Parus major\nTurdus merla\n", encoding="utf-8")
    assert main(["classify", *common, "--out", str(tmp_path / "x.csv"), "--species", str(listed)]) == EXIT_USAGE
    assert "line 2: 'Turdus merla' (did you mean 'Turdus merula'?)" in capsys.readouterr().err
    assert main(["classify", *common, "--out", str(tmp_path / "y.csv"), "--species", "Parus major",
                 "--raven", str(tmp_path / "raven")]) == EXIT_USAGE
    assert "avex-hub events" in capsys.readouterr().err and not (tmp_path / "y.csv").exists()


def test_classify_reports_the_rows_it_wrote(tmp_path, capsys):
    folder = small_folder(tmp_path / "in")  # 3 s, 4 s, 5 s at 2 s windows: 2 + 2 + 3 windows
    out = tmp_path / "species.csv"
    args = ["classify", str(folder), "--out", str(out), "--window", "2", "--top-k", "2", "--checkpoint", TINY,
            "--workers", "0"]
    assert main(args) == EXIT_OK
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 7 * 2
    assert f"wrote {len(written)} rows from 3 files" in capsys.readouterr().err


def test_no_progress_still_prints_the_summary(tmp_path, capsys):
    """--no-progress drops the bar, not the run's summary (it dropped the rows-written line): rows written, files
    skipped as done, failed, and flagged per flag, the counts checked against the output read back."""
    folder = small_folder(tmp_path / "in")
    sf.write(folder / "quiet.wav", np.zeros(3 * 16000, np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    out = tmp_path / "emb.npz"
    args = ["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]
    assert main(args) == EXIT_PARTIAL
    first = capsys.readouterr().err.splitlines()
    with np.load(out, allow_pickle=False) as data:
        rows, files, flags = len(data["file"]), data["file"], data["flags"]
    flagged = {flag: len(set(files[flags[:, i]])) for i, flag in enumerate(outputs.FLAG_NAMES)}
    assert flagged["silent"] == 1 and rows == 2 + 2 + 3 + 2
    per_flag = ", ".join(f"{flag} {n}" for flag, n in flagged.items() if n)
    any_flag = len(set(files[flags.any(axis=1)]))
    summary = (f"avex-hub: wrote {rows} rows from 4 files to {out}; files skipped (done by an earlier run): {{}}, "
               f"failed: 1, flagged: {any_flag} ({per_flag})")
    assert first[0] == summary.format(0) and first[1].startswith("avex-hub: error: 1 of 5 inputs could not be")
    assert main(args) == EXIT_PARTIAL  # the re-run skips the four done files
    assert capsys.readouterr().err.splitlines()[0] == summary.format(4)


def test_int8_cli_agrees_with_fp32(tmp_path):
    folder = small_folder(tmp_path / "in", n=2)
    fp32, int8 = tmp_path / "fp32.npz", tmp_path / "int8.npz"
    assert main(["embed", str(folder), "--out", str(fp32), "--window", "2", *QUIET]) == EXIT_OK
    assert main(["embed", str(folder), "--out", str(int8), "--window", "2", "--precision", "int8", *QUIET]) == EXIT_OK
    a, b = (torch.from_numpy(np.load(p)["embeddings"]) for p in (fp32, int8))
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.99 and not torch.equal(a, b)


def test_usage_errors_exit_2(tmp_path, capsys):
    folder = small_folder(tmp_path / "in", n=1)
    foreign = tmp_path / "mine.parquet"
    foreign.write_text("a file the user made")
    cases = [
        (["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "o.parquet")], "input not found"),
        (["embed", str(folder), "--out", str(foreign)], "--overwrite"),
        (["embed", str(folder), "--out", str(tmp_path / "o.parquet"), "--window", "2", "--hop", "3"], "hop_s"),
        (["embed", str(folder), "--out", str(tmp_path / "o.parquet"), "--channels", "left"], "channel"),
        (["embed", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--checkpoint", str(tmp_path / "nope")],
         "checkpoint not found"),
        (["frobnicate"], "invalid choice"),
    ]
    for argv, message in cases:
        extra = [] if argv[0] == "frobnicate" else QUIET if "--checkpoint" not in argv else QUIET[2:]
        assert main([*argv, *extra]) == EXIT_USAGE, argv
        assert message in capsys.readouterr().err, argv
    assert foreign.read_text() == "a file the user made"


def _cache_with_tiny(offline_hub, tiny_dir):
    from avex_hub.hub.weights import get_weights

    entry = get_weights("esp_aves2_sl_beats_all")
    snapshot = populate_hub_cache(offline_hub, entry.repo_id, {entry.filename: tiny_dir / "model.safetensors",
                                                               "label_map.json": tiny_dir / "label_map.json"})
    return entry, snapshot / entry.filename


def test_info_and_verify_with_a_cache(offline_hub, tiny_dir, monkeypatch, capsys):
    import avex_hub.hub.weights as weights

    entry, cached = _cache_with_tiny(offline_hub, tiny_dir)
    assert main(["info", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    models = {m["name"]: m for m in report["models"]}
    assert models[entry.name]["labels"] == 7 and models[entry.name]["cached"] == [str(cached)]
    assert models["esp_aves2_sl_beats_bio"]["cached"] == [] and models["esp_aves2_sl_beats_bio"]["labels"] is None
    assert models[entry.name]["encoder_parameters"] > 80_000_000 and report["offline"] is True
    assert main(["info"]) == EXIT_OK
    assert "cached" in capsys.readouterr().out

    assert main(["verify"]) == 1  # the cached file is not the published one
    text = capsys.readouterr().out
    assert f"{entry.name}: MISMATCH {cached}" in text and "esp_aves2_sl_beats_bio: not cached" in text

    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, entry.name, dataclasses.replace(entry, sha256=digest))
    assert main(["verify", entry.name]) == EXIT_OK
    assert f"{entry.name}: OK {cached}" in capsys.readouterr().out
    # Flip one byte in place and restore the timestamps: only re-reading the bytes can notice.
    blob = cached.resolve()
    stat = blob.stat()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert main(["verify", entry.name]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_info_reports_an_unreadable_label_map(offline_hub, tiny_dir, tmp_path, capsys):
    """A cached label map that does not parse is reported with what to do (it used to show as not cached)."""
    from avex_hub.hub.weights import get_weights

    entry = get_weights("esp_aves2_sl_beats_all")
    broken = tmp_path / "label_map.json"
    broken.write_text("{not json")
    populate_hub_cache(offline_hub, entry.repo_id, {entry.filename: tiny_dir / "model.safetensors",
                                                    "label_map.json": broken})
    assert main(["info", "--json"]) == EXIT_OK
    row = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}[entry.name]
    status = row["label_map"]
    assert row["labels"] is None and status["status"] == "refused" and "not valid JSON" in status["detail"]
    assert f"avex-hub download {entry.name}" in status["detail"]
    assert main(["info"]) == EXIT_OK
    assert f"{entry.name}: label map refused" in capsys.readouterr().out


def test_download_offline(offline_hub, tiny_dir, monkeypatch, capsys):
    import avex_hub.hub.weights as weights

    assert main(["download", "esp_aves2_sl_beats_all"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "not in the local Hub cache" in err
    entry, cached = _cache_with_tiny(offline_hub, tiny_dir)
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS, entry.name, dataclasses.replace(entry, sha256=digest))
    assert main(["download", entry.name]) == EXIT_OK  # offline, found in the cache and verified
    assert "SHA-256 verified" in capsys.readouterr().out
    assert main(["download", "no_such_model"]) == EXIT_USAGE


def test_console_script_in_a_subprocess(tiny_model, tmp_path):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^avex-hub = "avex_hub\.cli:main"$', pyproject, re.M)  # the console script's target
    folder = small_folder(tmp_path / "in")
    out = tmp_path / "emb.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-m", "avex_hub.cli", "embed", str(folder), "--out", str(out), "--window",
                          "2", "--checkpoint", TINY, "--workers", "2", "--batch-size", "3"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "real time" in run.stderr and "wrote 7 rows from 3 files" in run.stderr
    table = read_parquet(out).to_pydict()
    from avex_hub.embed.inference import embed_files

    api = embed_files(tiny_model, folder, window_s=2, num_workers=0, progress=False)
    np.testing.assert_allclose(np.array(table["embedding"]), api.embeddings, atol=1e-5)
