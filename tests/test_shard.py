"""--shard I/N and avex-hub merge: a stable split of an archive's inputs among machines, and the outputs joined."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import load_file, save_file

from avex_hub.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from avex_hub.embed.split import ShardRecord, input_keys, jump_hash, parse_shard, shard_of
from conftest import FIXTURE, tones

QUIET = ["--checkpoint", str(FIXTURE), "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Eight short recordings in two site folders."""
    root = tmp_path_factory.mktemp("archive") / "recordings"
    for i in range(8):
        path = root / f"site{i % 2}" / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tones(1.0 + 0.25 * i, 16000, seed=40 + i), 16000, subtype="FLOAT")
    return root


def test_shard_specs_are_checked_in_one_line():
    assert parse_shard("2/4").index == 2 and str(parse_shard(" 4 / 4 ")) == "4/4"
    for bad, says in [("3/2", "between 1 and the number of shards (2)"), ("0/2", "between 1"),
                      ("2", "expected I/N"), ("a/b", "expected I/N"), ("1/0", "at least 1")]:
        with pytest.raises(ValueError, match=re.escape(says)) as caught:
            parse_shard(bad)
        assert "\n" not in str(caught.value)


def test_the_split_is_stable_balanced_and_moves_little():
    # pinned: the same shard on every machine, Python and release (a change here re-splits every archive)
    assert [shard_of(f"site1/clip{i}.wav", 4) for i in range(8)] == [4, 3, 1, 4, 2, 3, 4, 2]
    assert jump_hash(0, 1) == 0 and [jump_hash(k, 10) for k in (1, 2**40, 2**63)] == [6, 9, 5]
    keys = [f"site{i % 7}/2024-05-{i:05d}.flac" for i in range(2000)]
    four = [shard_of(k, 4) for k in keys]
    assert all(440 <= four.count(s) <= 560 for s in range(1, 5))  # about a quarter each
    five = [shard_of(k, 5) for k in keys]
    moved = sum(a != b for a, b in zip(four, five)) / len(keys)
    assert 0.15 <= moved <= 0.25  # a fifth shard takes about 1/5; a modulo split would move 4/5
    assert all(b == a or b == 5 for a, b in zip(four, five))  # and only to the new shard


def test_keys_are_the_same_wherever_the_archive_is_mounted(archive, tmp_path):
    from avex_hub.audio.folders import find_audio

    elsewhere = tmp_path / "mnt" / "data"
    elsewhere.parent.mkdir()
    os.symlink(archive, elsewhere)
    here = find_audio([archive]).files
    there = find_audio([str(elsewhere) + "/"]).files
    assert sorted(input_keys(here, [str(archive)]).values()) == sorted(input_keys(there, [str(elsewhere)]).values())
    assert input_keys(here[:1], [str(archive)]) == {here[0]: "site0/clip0.wav"}
    assert input_keys([str(archive / "site1" / "clip1.wav")], []) == {str(archive / "site1" / "clip1.wav"): "clip1.wav"}
    prefix = input_keys(["s3://bucket/recordings/site1/clip1.wav"], ["s3://bucket/recordings/"])
    assert prefix == {"s3://bucket/recordings/site1/clip1.wav": "site1/clip1.wav"}


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1:]


def test_sharded_runs_merge_into_the_unsharded_rows_and_report_what_no_shard_covered(archive, tmp_path, capsys):
    whole = tmp_path / "whole.csv"
    assert main(["classify", str(archive), "--out", str(whole), *QUIET]) == EXIT_OK
    shards = [tmp_path / f"s{i}.csv" for i in (1, 2, 3)]
    for i, out in enumerate(shards, 1):
        assert main(["classify", str(archive), "--out", str(out), "--shard", f"{i}/3", *QUIET]) == EXIT_OK
    records = [ShardRecord.from_json(Path(f"{s}.shard.json").read_text(), str(s)) for s in shards]
    assert sorted(k for r in records for k in r.inputs) == sorted(
        f"site{i % 2}/clip{i}.wav" for i in range(8))  # every input in exactly one shard
    assert all(r.inputs[k][0] == sorted(
        f"site{i % 2}/clip{i}.wav" for i in range(8)).index(k) for r in records for k in r.inputs)  # walk position

    merged = tmp_path / "merged.csv"
    capsys.readouterr()
    assert main(["merge", *map(str, reversed(shards)), "--out", str(merged), "--inputs", str(archive)]) == EXIT_OK
    assert "merged 3 outputs" in capsys.readouterr().err
    assert sorted(_csv_rows(merged)) == sorted(_csv_rows(whole))
    assert json.loads(Path(f"{merged}.settings.json").read_text()) == json.loads(Path(f"{whole}.settings.json").read_text())
    files = list(dict.fromkeys(row[0] for row in _csv_rows(merged)))  # shard by shard, each in walk order
    assert files == [path for r in records for _, path, _ in sorted(r.inputs.values())]

    # one shard's output lost: the merge names every input it held and the shard to run again
    assert main(["merge", str(shards[0]), str(shards[2]), "--out", str(merged), "--inputs", str(archive),
                 "--overwrite"]) == EXIT_PARTIAL  # merged holds shard 2's rows: replaced only with --overwrite
    err = capsys.readouterr().err
    with open(f"{merged}.failures.csv", newline="", encoding="utf-8") as handle:
        missing = {row["path"]: row["error"] for row in csv.DictReader(handle)}
    assert sorted(missing) == sorted(r[1] for r in records[1].inputs.values())
    assert all("its shard, 2/3, did not run" in why for why in missing.values())
    assert f"{len(missing)} inputs are in no output" in err

    # a shard of another split (into 2) among shards of 3, or one shard given twice, is refused in one line
    other = tmp_path / "half.csv"
    assert main(["classify", str(archive), "--out", str(other), "--shard", "1/2", *QUIET]) == EXIT_OK
    capsys.readouterr()
    assert main(["merge", str(shards[0]), str(other), "--out", str(merged)]) == EXIT_USAGE
    assert "splits into different numbers of shards ([2, 3])" in capsys.readouterr().err
    assert main(["merge", str(shards[0]), str(shards[0]), "--out", str(merged)]) == EXIT_USAGE
    assert "are both shard 1/3" in capsys.readouterr().err


def test_merge_refuses_outputs_of_two_models_in_one_line(archive, tmp_path, capsys):
    other = tmp_path / "other-weights"
    other.mkdir()
    for name in ("config.json", "label_map.json"):
        (other / name).write_bytes((FIXTURE / name).read_bytes())
    tensors = load_file(str(FIXTURE / "model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 0.01
    save_file(tensors, str(other / "model.safetensors"))
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert main(["embed", str(archive / "site0"), "--out", str(a), *QUIET]) == EXIT_OK
    assert main(["embed", str(archive / "site1"), "--out", str(b), "--checkpoint", str(other), "--workers", "0",
                 "--no-progress"]) == EXIT_OK
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "ab.parquet")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different settings of two models (weights_sha256:" in err
    assert "run the odd one again with the same --model/--checkpoint" in err
    assert not (tmp_path / "ab.parquet").exists()


def test_merge_refuses_outputs_of_two_settings_naming_the_setting(archive, tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["classify", str(archive / "site0"), "--out", str(a), *QUIET]) == EXIT_OK
    assert main(["classify", str(archive / "site1"), "--out", str(b), "--hop", "0.5", *QUIET]) == EXIT_OK
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "ab.csv")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "made with different settings (hop_s: " in err and "of two models" not in err
    assert not (tmp_path / "ab.csv").exists()


def test_embeddings_merge_in_both_formats_and_a_file_in_two_outputs_is_refused(archive, tmp_path, capsys):
    import pyarrow.parquet as pq

    for fmt in ("parquet", "npz"):
        times = ["--times"] if fmt == "npz" else []  # --times' columns are kept (NPZ's merge dropped them)
        parts = [tmp_path / f"{site}.{fmt}" for site in ("site0", "site1")]
        for site, out in zip(("site0", "site1"), parts):
            assert main(["embed", str(archive / site), "--out", str(out), *times, *QUIET]) == EXIT_OK
        whole = tmp_path / f"whole.{fmt}"
        assert main(["embed", str(archive / "site0"), str(archive / "site1"), "--out", str(whole), *times,
                     *QUIET]) == EXIT_OK
        merged = tmp_path / f"merged.{fmt}"
        assert main(["merge", *map(str, parts), "--out", str(merged),
                     "--inputs", str(archive / "site0"), str(archive / "site1")]) == EXIT_OK
        if fmt == "parquet":
            a, b = pq.read_table(merged), pq.read_table(whole)
            assert a.schema.metadata == b.schema.metadata and a.to_pylist() == b.to_pylist()
        else:
            with np.load(merged) as a, np.load(whole) as b:
                assert a.files == b.files and "start_time" in a.files
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key])
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "site0.npz"), str(tmp_path / "whole.npz"), "--out",
                 str(tmp_path / "twice.npz")]) == EXIT_USAGE
    assert "has rows in both" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "site0.npz"), str(tmp_path / "site1.parquet"), "--out",
                 str(tmp_path / "mixed.npz")]) == EXIT_USAGE
    assert "share one format" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--shard", "3/2"], "--shard 3/2: the shard number must be between 1 and the number of shards (2)"),
    (["--shard", "half"], "--shard half: expected I/N"),
    (["--storage-options", "{'anon': true}"], "--storage-options: expected a JSON object"),
])
def test_bad_run_options_are_one_line_and_exit_2(archive, tmp_path, capsys, argv, says):
    assert main(["classify", str(archive), "--out", str(tmp_path / "x.csv"), *argv, *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == f"avex-hub: error: {err.removeprefix('avex-hub: error: ')}" and err.count("\n") == 0
    assert says in err and not (tmp_path / "x.csv").exists()


def test_merge_refuses_outputs_whose_columns_differ(archive, tmp_path, capsys):
    """classify --times is no setting (its columns come from the recordings' starts), so two shards may agree on
    every setting and still differ in columns: joined under the first header, the other's rows would be shifted."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["classify", str(archive), "--out", str(a), "--shard", "1/2", "--times", *QUIET]) == EXIT_OK
    assert main(["classify", str(archive), "--out", str(b), "--shard", "2/2", *QUIET]) == EXIT_OK
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "ab.csv")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{b} and {a} have different columns (start_time, end_time: " in err
    assert not (tmp_path / "ab.csv").exists()


def _npz_merged_in_memory(parts: list[Path]) -> dict[str, np.ndarray]:
    """What merge wrote before it streamed: every output's arrays loaded, each column concatenated."""
    loaded = []
    for part in parts:
        with np.load(part, allow_pickle=False) as data:
            loaded.append({k: data[k] for k in data.files if k != "settings"})
    return {k: np.concatenate([d[k] for d in loaded]) for k in loaded[0]}


def _npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, value, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("times", [[], ["--times"]], ids=["plain", "times"])
def test_npz_merge_streams_exactly_the_arrays_the_in_memory_merge_joined(archive, tmp_path, times):
    """The merged .npz holds, member by member and byte for byte, the .npy files of the concatenated shard arrays
    (as np.savez would write them), and the project's readers take it."""
    from avex_hub import explore
    from avex_hub.embed.merge import read_output_settings

    recordings = tmp_path / "recordings"
    shutil.copytree(archive, recordings)
    sf.write(recordings / "site1" / "a-recording-with-a-much-longer-name.wav", tones(1.5, 16000, seed=9), 16000)
    parts = [tmp_path / f"{i}.npz" for i in (1, 2, 3)]
    for i, out in enumerate(parts, 1):
        assert main(["embed", str(recordings), "--out", str(out), "--shard", f"{i}/3", *times, *QUIET]) == EXIT_OK
    widths = set()
    for part in parts:
        with np.load(part) as data:
            widths.add(data["file"].dtype)
    assert len(widths) == 2  # one shard's file names are longer: the joined column takes the widest

    merged = tmp_path / "merged.npz"
    assert main(["merge", *map(str, reversed(parts)), "--out", str(merged)]) == EXIT_OK
    expected = _npz_merged_in_memory(parts)  # in shard order, as merge joins them
    with np.load(parts[0]) as first:
        settings = first["settings"]
    with zipfile.ZipFile(merged) as written:
        names = [n.removesuffix(".npy") for n in written.namelist()]
        assert names == ["file", "settings", *(k for k in expected if k != "file")]
        assert ("start_time" in names) == bool(times)
        for key, value in {**expected, "settings": settings}.items():
            assert written.read(key + ".npy") == _npy_bytes(value), key
    with np.load(merged, allow_pickle=False) as got:
        assert len(got["start_s"]) == 9 and got["file"].dtype == max(widths)  # one window per recording
    assert read_output_settings(str(merged)) == read_output_settings(str(parts[0]))
    windows = explore.read_windows(merged)
    assert windows.file.tolist() == expected["file"].tolist()
    np.testing.assert_array_equal(windows.embeddings, expected["embeddings"])


def test_npz_merge_holds_a_part_of_a_column_never_the_outputs(archive, tmp_path):
    """Six outputs of 16 MiB of embeddings each (96 MiB in all) merge with a traced peak below half of one
    output's embeddings (the in-memory merge held every output and their concatenation: over 190 MiB)."""
    import tracemalloc

    from avex_hub.embed.merge import merge_outputs
    from avex_hub.embed.outputs import save_npz

    real = tmp_path / "real.npz"
    assert main(["embed", str(archive / "site0"), "--out", str(real), *QUIET]) == EXIT_OK
    with np.load(real) as data:
        settings = data["settings"]
    rows, dim, files_per_output = 4096, 1024, 64
    parts = []
    for i in range(6):
        rng = np.random.default_rng(i)
        names = np.repeat([f"site{i}/clip{j:04d}.wav" for j in range(files_per_output)], rows // files_per_output)
        part = tmp_path / f"big{i}.npz"
        save_npz(part, {"file": names, "settings": settings, "channel": np.full(rows, -1, np.int32),
                        "start_s": np.arange(rows, dtype=np.float64), "end_s": np.arange(rows) + 1.0,
                        "layer": np.full(rows, -1, np.int16), "flags": np.zeros((rows, 4), bool),
                        "embeddings": rng.standard_normal((rows, dim), np.float32)})
        parts.append(part)
    one_column = rows * dim * 4  # 16 MiB
    merged = tmp_path / "merged.npz"
    tracemalloc.start()
    try:
        result = merge_outputs([str(p) for p in parts], str(merged))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.rows == 6 * rows and result.files == 6 * files_per_output
    assert peak < one_column / 2, f"merge held {peak / 2**20:.1f} MiB at its peak"
    with np.load(merged) as got:
        assert got["embeddings"].shape == (6 * rows, dim)
        for i, part in enumerate(parts):
            with np.load(part) as data:
                np.testing.assert_array_equal(got["embeddings"][i * rows:(i + 1) * rows], data["embeddings"])


# -- what the review of issue 21 found: damaged outputs, colliding keys, --out that is not the merge's -------------
@pytest.fixture(scope="module")
def csv_shards(archive, tmp_path_factory):
    """The archive classified in three shards (CSV): a folder to copy from, never changed."""
    folder = tmp_path_factory.mktemp("csv_shards")
    for i in (1, 2, 3):
        assert main(["classify", str(archive), "--out", str(folder / f"s{i}.csv"), "--shard", f"{i}/3",
                     *QUIET]) == EXIT_OK
    return folder


def _shards_copy(csv_shards: Path, tmp_path: Path) -> list[Path]:
    for path in csv_shards.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    return [tmp_path / f"s{i}.csv" for i in (1, 2, 3)]


def _one_line_usage(capsys, code, *says: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE, err
    assert err.startswith("avex-hub: error: ") and err.count("\n") == 0, err
    assert all(s in err for s in says), err
    return err


@pytest.mark.parametrize("damage, says", [
    (lambda data: data[:len(data) // 2], "cut short"),  # cut mid-row: one row fused with the next, cells lost
    (lambda data: data.rstrip(b"\r\n"), "does not end in a line end"),  # cut at the end of a cell
    (lambda data: data.replace(b"\n", b",extra\n", 3), "cells, the header"),  # a row with a cell too many
], ids=["mid-row", "at-a-cell-end", "a-cell-too-many"])
def test_a_damaged_csv_output_is_refused_in_one_line_not_merged(csv_shards, tmp_path, capsys, damage, says):
    shards = _shards_copy(csv_shards, tmp_path)
    shards[1].write_bytes(damage(shards[1].read_bytes()))
    capsys.readouterr()
    merged = tmp_path / "m.csv"
    code = main(["merge", *map(str, shards), "--out", str(merged)])
    _one_line_usage(capsys, code, f"{shards[1]}: not a whole CSV output", says, "run its shard again")
    assert not merged.exists()


@pytest.fixture(scope="module")
def npz_output(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("npz_output") / "e.npz"
    assert main(["embed", str(archive / "site0"), "--out", str(out), *QUIET]) == EXIT_OK
    return out


@pytest.mark.parametrize("cut", [0, 1000], ids=["empty", "truncated"])
def test_a_damaged_npz_output_is_refused_in_one_line(npz_output, tmp_path, capsys, cut):
    out = tmp_path / "e.npz"
    out.write_bytes(npz_output.read_bytes()[:cut])
    capsys.readouterr()
    code = main(["merge", str(out), "--out", str(tmp_path / "m.npz")])
    _one_line_usage(capsys, code, f"{out}: not a whole .npz (", "run its shard again")
    assert not (tmp_path / "m.npz").exists()


def test_inputs_of_several_folders_get_distinct_keys_and_a_late_file_is_reported(archive, tmp_path, capsys):
    """AudioMoth names repeat across sites: siteA/x.wav and siteB/x.wav must be two keys (the folder's own name
    first when several are given, so two mounts still agree), and a file added later under siteA is reported."""
    for site in ("siteA", "siteB"):
        (tmp_path / site).mkdir()
        for i in (0, 2):
            shutil.copy(archive / "site0" / f"clip{i}.wav", tmp_path / site / f"20240501_00000{i}.WAV")
    roots = [str(tmp_path / "siteA"), str(tmp_path / "siteB")]
    keys = input_keys([f"{roots[0]}/20240501_000000.WAV", f"{roots[1]}/20240501_000000.WAV"], roots)
    assert sorted(keys.values()) == ["siteA/20240501_000000.WAV", "siteB/20240501_000000.WAV"]
    assert input_keys(["s3://b/x/siteA/a.wav"], ["s3://b/x/siteA/", "/mnt/siteB"]) == \
        {"s3://b/x/siteA/a.wav": "siteA/a.wav"}  # the same key from a bucket as from a mount
    shards = [tmp_path / f"a{i}.csv" for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        assert main(["classify", *roots, "--out", str(out), "--shard", f"{i}/2", *QUIET]) == EXIT_OK
    records = [ShardRecord.from_json(Path(f"{s}.shard.json").read_text(), str(s)) for s in shards]
    assert sum(len(r.inputs) for r in records) == 4  # one entry per written file
    late = tmp_path / "siteA" / "20240502_000000.WAV"
    shutil.copy(archive / "site1" / "clip1.wav", late)
    capsys.readouterr()
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "m.csv"), "--inputs", *roots]) == EXIT_PARTIAL
    assert f"1 inputs are in no output (listed in {tmp_path / 'm.csv'}.failures.csv): {late}" in capsys.readouterr().err


@pytest.mark.parametrize("names", [("a/x.wav", "b/x.wav"), ("x/a/x.wav", "y/a/x.wav")], ids=["files", "folders"])
def test_inputs_that_would_share_a_key_are_refused_in_one_line(archive, tmp_path, capsys, names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive / "site0" / "clip0.wav", tmp_path / name)
    given = [str(tmp_path / n) for n in names] if names[0].count("/") == 1 else \
        [str((tmp_path / n).parent) for n in names]  # two files named directly, or two folders of one name
    capsys.readouterr()
    code = main(["classify", *given, "--out", str(tmp_path / "x.csv"), "--shard", "1/2", *QUIET])
    _one_line_usage(capsys, code, "would share the shard key", "give the folder or prefix that holds both")
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(ValueError, match="would share the shard key"):
        input_keys(["https://a.org/x/rec.wav", "https://b.org/y/rec.wav"], [])  # two URLs ending alike
    if names[0].count("/") == 1:  # unsharded outputs are matched by path: the same inputs merge and are covered
        assert main(["classify", *given, "--out", str(tmp_path / "whole.csv"), *QUIET]) == EXIT_OK
        assert main(["merge", str(tmp_path / "whole.csv"), "--out", str(tmp_path / "m.csv"), "--inputs",
                     *given]) == EXIT_OK


def test_merge_replaces_only_its_own_out_and_a_shard_output_merged_into_loses_its_record(csv_shards, tmp_path,
                                                                                           capsys):
    shards = _shards_copy(csv_shards, tmp_path)
    third = shards[2].read_bytes()
    capsys.readouterr()
    code = main(["merge", str(shards[0]), str(shards[1]), "--out", str(shards[2])])  # a typo for another name
    _one_line_usage(capsys, code, f"{shards[2]} exists and is not an earlier merge of these outputs", "--overwrite")
    assert shards[2].read_bytes() == third
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my own notes\n")
    code = main(["merge", *map(str, shards), "--out", str(foreign)])
    _one_line_usage(capsys, code, "not an output of avex-hub", "pass --overwrite")
    assert foreign.read_text() == "my own notes\n"
    assert main(["merge", *map(str, shards), "--out", str(foreign), "--overwrite"]) == EXIT_OK
    assert main(["merge", *map(str, shards), "--out", str(foreign)]) == EXIT_OK  # an earlier merge of them

    rows = sorted(row for s in shards for row in _csv_rows(s))
    record = Path(f"{shards[0]}.shard.json")
    assert main(["merge", *map(str, shards), "--out", str(shards[0])]) == EXIT_OK  # into one of the outputs
    assert sorted(_csv_rows(shards[0])) == rows
    assert not record.exists()  # it said "1/3" of a file that now holds all three
    capsys.readouterr()
    code = main(["merge", *map(str, shards), "--out", str(tmp_path / "again.csv")])
    _one_line_usage(capsys, code, f"some outputs were made with --shard and some without ({shards[0]} has no "
                    ".shard.json: a run without --shard, a merge")


@pytest.mark.parametrize("where", ["record", "output"])
def test_a_run_stopped_between_its_output_and_its_shard_record_misleads_no_merge(archive, tmp_path, capsys,
                                                                                 monkeypatch, where):
    """A kill between writing ``--out`` and ``<out>.shard.json`` (in either order): merge must not call an input
    that is in an output uncovered, nor take a record that does not describe its output."""
    from avex_hub.cli import inference

    recordings = tmp_path / "recordings"
    shutil.copytree(archive / "site0", recordings)
    shards = [tmp_path / f"k{i}.csv" for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        assert main(["classify", str(recordings), "--out", str(out), "--shard", f"{i}/2", *QUIET]) == EXIT_OK
    for i in range(6):  # later files, some in each shard
        shutil.copy(archive / "site1" / f"clip{2 * (i % 4) + 1}.wav", recordings / f"late{i}.wav")

    class Killed(BaseException):
        pass

    def kill(*args, **kwargs):
        raise Killed
    monkeypatch.setattr(inference, "record_shard" if where == "record" else "_merge", kill)  # the kill point
    with pytest.raises(Killed):
        main(["classify", str(recordings), "--out", str(shards[0]), "--shard", "1/2", *QUIET])
    monkeypatch.undo()
    capsys.readouterr()
    code = main(["merge", *map(str, shards), "--out", str(tmp_path / "m.csv"), "--inputs", str(recordings)])
    err = capsys.readouterr().err
    if code == EXIT_USAGE:
        assert "does not match" in err and "run shard 1/2 again" in err and err.count("\n") == 1
        return
    in_output = {row[0] for s in shards for row in _csv_rows(s)}
    with open(f"{tmp_path / 'm.csv'}.failures.csv", newline="", encoding="utf-8") as handle:
        uncovered = {row["path"] for row in csv.DictReader(handle)}
    assert code == EXIT_PARTIAL and uncovered and not uncovered & in_output


def test_file_urls_are_local_paths_and_a_url_for_a_local_option_is_refused(archive, csv_shards, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a mangled file:/... folder would appear
    shards = _shards_copy(csv_shards, tmp_path)
    merged = tmp_path / "out" / "m.csv"
    assert main(["merge", *map(str, shards), "--out", f"file://{merged}"]) == EXIT_OK
    assert sorted(_csv_rows(merged)) == sorted(row for s in shards for row in _csv_rows(s))
    single = tmp_path / "one" / "c.csv"
    assert main(["classify", str(archive / "site0" / "clip0.wav"), "--out", f"file://{single}", "--raven",
                 f"file://{tmp_path / 'raven'}", *QUIET]) == EXIT_OK
    assert single.is_file() and len(list((tmp_path / "raven").iterdir())) == 1
    assert not (tmp_path / "file:").exists()
    capsys.readouterr()
    assert main(["index", str(tmp_path), "--db", "s3://outputs/db"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --db: expected a local path, got the URL s3://outputs/db" in err
    assert not (tmp_path / "s3:").exists()


def test_merge_write_errors_are_one_line(csv_shards, tmp_path, capsys):
    shards = _shards_copy(csv_shards, tmp_path)
    (tmp_path / "afile").write_text("a file where a folder is expected\n")
    capsys.readouterr()
    code = main(["merge", *map(str, shards), "--out", str(tmp_path / "afile" / "x.csv")])
    _one_line_usage(capsys, code, "--out: cannot write in", "choose a folder you can write to")
    code = main(["merge", *map(str, shards), "--out", f"{shards[0]}.failures.csv"])
    _one_line_usage(capsys, code, f"names the .failures.csv sidecar of {shards[0]}", "a name of its own")
    code = main(["merge", *map(str, shards), "--out", str(tmp_path)])
    _one_line_usage(capsys, code, "found no extension")
    Path(f"{shards[0]}.failures.csv").write_text("file,channel\nx.wav,-1\n")  # a merge once written over it
    code = main(["merge", *map(str, shards), "--out", str(tmp_path / "m.csv")])
    _one_line_usage(capsys, code, f"{shards[0]}.failures.csv: not a failure list of avex-hub")
    assert not (tmp_path / "m.csv").exists()


def test_merge_inputs_with_no_audio_say_so(csv_shards, tmp_path, capsys):
    shards = _shards_copy(csv_shards, tmp_path)
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    code = main(["merge", *map(str, shards), "--out", str(tmp_path / "m.csv"), "--inputs", str(tmp_path / "empty")])
    _one_line_usage(capsys, code, "--inputs: no audio files found in", "give the PATHs the runs were given")
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("spec, says", [("１/３", "expected I/N"), ("1/99999999999999999999", "at most 1,000,000"),
                                        ("٢/٣", "expected I/N")])
def test_shard_specs_take_ascii_digits_and_a_bounded_count(spec, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_shard(spec)
    assert parse_shard("1000000/1000000").count == 1_000_000


def test_merge_into_a_store_that_denies_writes_is_one_line(s3_store, csv_shards, tmp_path, capsys):
    pytest.importorskip("s3fs", reason="the cloud extra: pip install -e '.[cloud]'")
    shards = _shards_copy(csv_shards, tmp_path)
    with s3_store.authorization():  # the reader may read the open bucket, and write nowhere
        capsys.readouterr()
        code = main(["merge", *map(str, shards), "--out", "s3://outputs/denied-merge/m.csv", "--storage-options",
                     json.dumps(s3_store.options(s3_store.reader))])
    err = _one_line_usage(capsys, code, "--out s3://outputs/denied-merge/m.csv")
    assert "access denied" in err and "/tmp/" not in err  # no temporary copy named
    assert s3_store.keys("outputs", "denied-merge/") == []
