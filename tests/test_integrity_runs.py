"""Runs that stay correct: resumption under changed settings and damaged shards, the one folder walk (links,
unreadable folders, .parts), truncated files, whole-file ultrasonic check, one-line CLI errors, and outputs
that other programs (spreadsheets, Raven) read as meant."""

from __future__ import annotations

import csv
import errno
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.embed import outputs
from avex_hub.audio.decoding import load_audio
from avex_hub.audio.high_frequency import HighFrequencyContentWarning, high_frequency_energy_fraction
from avex_hub.embed.settings import OUTPUT_VERSION
from avex_hub.cli import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from avex_hub.audio.windows import stream_windows

from conftest import tones

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "fixtures" / "beats-tiny")
QUIET = ["--checkpoint", TINY, "--workers", "0", "--no-progress"]


def clips(root: Path, n: int = 2, seconds: float = 3.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"clip{i}.wav", tones(seconds + i, 16000, seed=40 + i), 16000, subtype="FLOAT")
    return root


def parquet(path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def spy_files(monkeypatch) -> list[list[str]]:
    """Record which inputs each run actually decodes and embeds."""
    import avex_hub.embed.inference as inference

    seen: list[list[str]] = []
    real = inference.iter_file_results

    def spy(model, paths, *args, **kwargs):
        seen.append([str(p) for p in paths])
        return real(model, paths, *args, **kwargs)

    monkeypatch.setattr(inference, "iter_file_results", spy)
    return seen


def cut(path: Path, fraction: float) -> Path:
    """A real file with its bytes cut short (a copy or download that stopped)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# -- 3. resumed runs never mix settings ----------------------------------------------------------------------
def test_changed_preprocessing_recomputes_every_shard_and_is_recorded(tiny_copy, tmp_path, monkeypatch):
    from avex_hub import build_model

    folder, out = clips(tmp_path / "in"), tmp_path / "emb.parquet"
    args = ["embed", str(folder), "--out", str(out), "--window", "2", "--checkpoint", str(tiny_copy),
            "--workers", "0", "--no-progress"]
    assert main(args) == EXIT_OK
    config = json.loads((tiny_copy / "config.json").read_text())
    config["preprocessing"] = {"fbank_mean": 10.0, "fbank_std": 4.0}
    config["fbank_mean"], config["fbank_std"] = 10.0, 4.0  # the BEATs fields must agree (else a named error)
    (tiny_copy / "config.json").write_text(json.dumps(config))
    seen = spy_files(monkeypatch)
    assert main(args) == EXIT_OK
    assert seen == [[str(folder / "clip0.wav"), str(folder / "clip1.wav")]]  # nothing reused
    table = parquet(out)
    recorded = json.loads(table.schema.metadata[b"avex_hub"])
    assert recorded["preprocessing"]["fbank_mean"] == 10.0 and recorded["architecture"]["encoder_layers"] == 3
    assert recorded["output_version"] == OUTPUT_VERSION
    model = build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
    data, _ = sf.read(folder / "clip0.wav", dtype="float32")
    with torch.inference_mode():
        expected = model.embed(torch.from_numpy(data[:32000])[None]).numpy()
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()[0]), expected[0], atol=1e-4)


def test_csv_settings_sidecar_records_the_run(tmp_path):
    folder, out = clips(tmp_path / "in", n=1), tmp_path / "species.csv"
    assert main(["classify", str(folder), "--out", str(out), "--window", "2", "--top-k", "2", *QUIET]) == EXIT_OK
    recorded = json.loads(Path(f"{out}.settings.json").read_text())
    assert recorded["top_k"] == 2 and recorded["window_s"] == 2.0 and "preprocessing" in recorded
    assert len(recorded["labels_sha256"]) == 64


# -- 4. a damaged shard is recomputed ------------------------------------------------------------------------
def test_truncated_shard_is_recomputed_with_a_line(tmp_path, monkeypatch, capsys):
    folder, out = clips(tmp_path / "in"), tmp_path / "emb.parquet"
    args = ["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]
    assert main(args) == EXIT_OK
    before = parquet(out)
    shard = sorted(Path(f"{out}.parts").iterdir())[0]
    cut(shard, 0.5)
    capsys.readouterr()
    seen = spy_files(monkeypatch)
    assert main(args) == EXIT_OK
    assert len(seen[0]) == 1
    assert f"recomputing {seen[0][0]}" in capsys.readouterr().err
    assert parquet(out).equals(before)


# -- 5. one folder walk, nothing skipped in silence -------------------------------------------------------------
def test_walk_follows_links_guards_loops_and_keeps_parts_named_folders(tmp_path):
    from avex_hub.audio.folders import find_audio

    real = clips(tmp_path / "elsewhere", n=1)
    root = tmp_path / "root"
    clips(root / "a.parts", n=1)  # a user's folder that happens to end in .parts
    os.symlink(real, root / "linked")
    os.symlink(root, root / "a.parts" / "loop")  # a loop back to the top
    search = find_audio([root])
    assert search.files == [str(root / "a.parts" / "clip0.wav"), str(root / "linked" / "clip0.wav")]
    assert search.failures == {}
    assert find_audio([root], skip=[root / "a.parts"]).files == [str(root / "linked" / "clip0.wav")]


def test_unreadable_folder_is_a_failure_everywhere(tmp_path, monkeypatch):
    from avex_hub.audio.datasets import AudioDataset

    root = tmp_path / "root"
    clips(root / "Avis", n=1)
    clips(root / "Locked", n=1)
    real_scandir = os.scandir

    def scandir(path):  # as root, chmod cannot make a folder unreadable; the walk sees what EACCES gives
        if os.path.basename(os.fspath(path)) == "Locked":
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(root), "--out", str(out), "--window", "2", *QUIET]) == EXIT_PARTIAL
    with open(f"{out}.failures.csv", newline="", encoding="utf-8") as handle:
        report = list(csv.DictReader(handle))
    assert [r["path"] for r in report] == [str(root / "Locked")] and "PermissionError" in report[0]["error"]
    assert set(parquet(out).column("file").to_pylist()) == {str(root / "Avis" / "clip0.wav")}
    with pytest.raises(PermissionError, match="Locked"):
        AudioDataset.from_folder(root)
    with pytest.warns(UserWarning, match="could not be listed"):
        ds = AudioDataset.from_folder(root, on_error="skip", clip_s=1.0)
    assert ds.labels == ["Avis"] and ds.failures[0][0] == str(root / "Locked")


def test_dataset_follows_linked_class_folders(tmp_path):
    from avex_hub.audio.datasets import AudioDataset

    root = tmp_path / "root"
    clips(root / "Avis", n=1)
    os.symlink(clips(tmp_path / "store" / "Bufo", n=1), root / "Bufo")
    assert AudioDataset.from_folder(root, clip_s=1.0).labels == ["Avis", "Bufo"]


def test_own_parts_folder_is_skipped_but_a_parts_named_input_folder_is_not(tmp_path):
    root = clips(tmp_path / "root", n=1)
    clips(root / "old.parts", n=1)
    out = root / "emb.parquet"  # the output (and its .parts) inside the searched folder
    assert main(["embed", str(root), "--out", str(out), "--window", "2", *QUIET]) == EXIT_OK
    assert main(["embed", str(root), "--out", str(out), "--window", "2", *QUIET]) == EXIT_OK  # its shards not inputs
    assert sorted(set(parquet(out).column("file").to_pylist())) == [str(root / "clip0.wav"),
                                                                     str(root / "old.parts" / "clip0.wav")]


def test_same_file_relative_and_absolute_is_processed_once(tmp_path, monkeypatch):
    folder = clips(tmp_path / "in", n=1)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "emb.parquet"
    assert main(["embed", "in/clip0.wav", str(folder / "clip0.wav"), str(folder), "--out", str(out),
                 "--window", "2", *QUIET]) == EXIT_OK
    assert parquet(out).column("file").to_pylist() == ["in/clip0.wav"] * 2  # 3 s: two 2 s windows, once


# -- 6. truncated audio is flagged -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mp3", "wav"])
def test_truncated_file_is_flagged_in_every_output(kind, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "whole.wav", tones(2, 16000, seed=1), 16000)
    name = folder / f"cut.{kind}"
    sf.write(name, tones(2, 16000, seed=2), 16000, **({"format": "MP3"} if kind == "mp3" else {}))
    cut(name, 0.47)
    audio = load_audio(name)
    assert 0.3 < audio.duration_s < 1.5 and audio.flags[0].truncated
    assert not load_audio(folder / "whole.wav").flags[0].truncated
    stream = stream_windows(name, window_s=0.5, block_s=0.25)
    windows = list(stream)
    assert stream.truncated and windows[-1].flags.truncated and not windows[0].flags.truncated
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(folder), "--out", str(out), "--window", "0.5", *QUIET]) == EXIT_OK
    assert "1 of 2 files decode less audio than their headers state" in capsys.readouterr().err
    rows = parquet(out).to_pydict()
    flagged = {f for f, t in zip(rows["file"], rows["truncated"]) if t}
    assert flagged == {str(name)} and all(t for f, t in zip(rows["file"], rows["truncated"]) if f == str(name))
    species = tmp_path / "species.csv"
    assert main(["classify", str(folder), "--out", str(species), "--window", "0.5", "--raven",
                 str(tmp_path / "raven"), *QUIET]) == EXIT_OK
    with open(species, newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert {r["flags"] for r in table if r["file"] == str(name)} == {"truncated"}
    assert {r["flags"] for r in table if r["file"] != str(name)} == {""}
    raven = (tmp_path / "raven" / "cut.Table.1.selections.txt").read_text().splitlines()
    assert all(line.split("\t")[-1] == "truncated" for line in raven[1:]) and len(raven) > 1


# -- 7. energy above 8 kHz over the whole streamed file ---------------------------------------------------------
def test_ultrasonic_content_after_the_first_block_is_found(tmp_path):
    sr = 32000
    t = np.arange(3 * sr) / sr
    wave = np.where(t < 1.5, 0.3 * np.sin(2 * np.pi * 1000 * t), 0.3 * np.sin(2 * np.pi * 12000 * t))
    path = tmp_path / "late_bat.wav"
    sf.write(path, wave.astype(np.float32), sr, subtype="FLOAT")
    with pytest.warns(HighFrequencyContentWarning, match="late_bat"):
        stream = stream_windows(path, window_s=1.0, block_s=1.0)  # the high tone starts in the second block
        list(stream)
    assert stream.high_frequency_fraction == pytest.approx(high_frequency_energy_fraction(wave, sr), rel=1e-9)
    assert 0.4 < stream.high_frequency_fraction < 0.6


def test_high_frequency_meter_matches_the_whole_signal_in_any_chunking():
    from avex_hub.audio.high_frequency import HighFrequencyMeter

    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 50_000)).astype(np.float32))
    whole = high_frequency_energy_fraction(wave, 48000)
    meter = HighFrequencyMeter(48000)
    for chunk in wave.split(3001, dim=1):
        meter.add(chunk)
        assert meter.rest.shape[1] < 8192  # constant memory: less than a frame carried over
    assert meter.fraction == pytest.approx(whole, rel=1e-12)
    short = wave[:, :5000]
    meter = HighFrequencyMeter(48000)
    meter.add(short)
    assert meter.fraction == pytest.approx(high_frequency_energy_fraction(short, 48000), rel=1e-12)


# -- CLI errors: one line and the documented exit code ---------------------------------------------------------
def test_read_only_out_fails_before_any_work(tmp_path, monkeypatch, capsys):
    folder, locked = clips(tmp_path / "in", n=1), tmp_path / "locked"
    locked.mkdir()
    real_open = os.open

    def deny(path, *args, **kwargs):  # what a read-only folder answers (as root, chmod would not stop us)
        if os.path.dirname(os.fspath(path)) == str(locked):
            raise PermissionError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    seen = spy_files(monkeypatch)
    assert main(["embed", str(folder), "--out", str(locked / "emb.parquet"), *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert seen == [] and "--out: cannot write in" in err and "Read-only" in err and len(err.splitlines()) == 1


def test_disk_full_says_what_was_kept_and_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    folder, out = clips(tmp_path / "in", n=3), tmp_path / "emb.parquet"
    args = ["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]
    real, written = outputs.write_shard, []

    def fill_up(target, *a, **k):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        written.append(target)
        real(target, *a, **k)

    monkeypatch.setattr(outputs, "write_shard", fill_up)
    assert main(args) == EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "the disk is full" in err and "1 finished files" in err
    assert "resumes" in err and not out.exists()
    monkeypatch.setattr(outputs, "write_shard", real)
    seen = spy_files(monkeypatch)
    assert main(args) == EXIT_OK and len(seen[0]) == 2


def test_raven_pointing_at_a_file_fails_before_work(tmp_path, monkeypatch, capsys):
    folder = clips(tmp_path / "in", n=1)
    (tmp_path / "tables.txt").write_text("an earlier export")
    seen = spy_files(monkeypatch)
    assert main(["classify", str(folder), "--out", str(tmp_path / "s.csv"), "--raven", str(tmp_path / "tables.txt"),
                 *QUIET]) == EXIT_USAGE
    assert seen == [] and "--raven" in capsys.readouterr().err


def test_cached_weights_that_are_a_folder_give_one_line(tmp_path, monkeypatch, capsys):
    import avex_hub.hub.loading as hub

    folder = clips(tmp_path / "in", n=1)
    bogus = tmp_path / "blob"
    bogus.mkdir()
    monkeypatch.setattr(hub, "_hub_download", lambda *a, **k: bogus)
    assert main(["embed", str(folder), "--out", str(tmp_path / "e.parquet"), "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and str(bogus) in err and "avex-hub download" in err


def test_manifest_encodings(tmp_path):
    from avex_hub.audio.datasets import AudioDataset

    clips(tmp_path, n=1)
    text = "path,label\nclip0.wav,Pic épeiche\n"
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16"))  # with its byte-order mark
    assert AudioDataset.from_manifest(tmp_path / "utf16.csv", clip_s=1.0).labels == ["Pic épeiche"]
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match="line 2 is not valid utf-8.*save the manifest as UTF-8"):
        AudioDataset.from_manifest(tmp_path / "latin1.csv")


def test_file_name_that_is_not_utf8_is_reported_and_written(tmp_path):
    folder = clips(tmp_path / "in", n=1)
    bad = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xe9.wav"))
    sf.write(os.fsencode(bad), tones(2, 16000, seed=3), 16000)
    broken = os.fsdecode(os.path.join(os.fsencode(folder), b"\xff broken.wav"))
    Path(broken).write_bytes(b"RIFF\x00\x00")
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(folder), "--out", str(out), "--window", "2", *QUIET]) == EXIT_PARTIAL
    report = Path(f"{out}.failures.csv").read_text(encoding="utf-8")  # valid UTF-8
    assert "\\xff broken.wav" in report
    assert str(folder / "caf\\xe9.wav") in set(parquet(out).column("file").to_pylist())


# -- outputs other programs read as meant ---------------------------------------------------------------------
def _part(start: float, label_index: int = 0) -> dict[str, np.ndarray]:
    return {"channel": np.array([-1], np.int32), "start_s": np.array([start]), "end_s": np.array([start + 10]),
            "flags": np.zeros((1, 4), bool), "top_indices": np.array([[label_index]], np.int32),
            "top_scores": np.array([[0.75]], np.float32)}


def test_csv_times_are_plain_decimals_and_text_cells_are_not_formulas(tmp_path):
    labels = ("=HYPERLINK(\"http://x\")", "Parus major")
    out = tmp_path / "s.csv"
    outputs.write_csv(out, [("-night.wav", _part(1234567.5)), ("@a.wav", _part(0.0000625, 1))], labels)
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][:7] == ["'-night.wav", "-1", "1234567.5", "1234577.5", "1", "'=HYPERLINK(\"http://x\")", "0.750000"]
    assert rows[2][:6] == ["'@a.wav", "-1", "0.0000625", "10.0000625", "1", "Parus major"]


def test_raven_labels_with_tabs_and_newlines_stay_one_row(tmp_path):
    labels = ("Turdus\tmerula\nsecond line",)
    names = outputs.raven_names(["a.wav"])
    [table] = outputs.write_raven_tables(tmp_path, [("a.wav", _part(0.0))], labels, names)
    lines = table.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and len(lines[1].split("\t")) == len(lines[0].split("\t"))
    assert lines[1].split("\t")[7] == "Turdus\\tmerula\\nsecond line"


def test_stale_raven_table_from_a_name_clash_is_removed(tmp_path):
    folder = clips(tmp_path / "in", n=1)
    clips(folder / "sub", n=1)  # in/clip0.wav and in/sub/clip0.wav share the stem
    raven, out = tmp_path / "raven", tmp_path / "s.csv"
    args = ["--out", str(out), "--window", "2", "--raven", str(raven), *QUIET]
    assert main(["classify", str(folder), *args]) == EXIT_OK
    assert len(list(raven.iterdir())) == 2 and not (raven / "clip0.Table.1.selections.txt").exists()
    clash = outputs.raven_names([str(folder / "clip0.wav"), str(folder / "sub" / "clip0.wav")])
    (folder / "sub" / "clip0.wav").unlink()
    assert main(["classify", str(folder), *args]) == EXIT_OK
    # in/clip0.wav's table now has the plain name; its old clash-named table is gone (one table per input)
    assert (raven / "clip0.Table.1.selections.txt").exists()
    assert not (raven / clash[str(folder / "clip0.wav")]).exists()
