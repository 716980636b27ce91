"""avex_hub.tutorial: the helpers the notebooks import (mode, checkout, figures, the BEANS-Zero subset).

The BEANS-Zero loader runs on a local stand-in of the parquet shards (same columns, several row groups, other
datasets mixed in, shards in a sub-folder); the notebooks exercise ``show`` and the rest in a real kernel.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from avex_hub.tutorial import FigureLog, fetch_beans_zero, find_repo_root, show, tutorial_mode

REPO = Path(__file__).resolve().parent.parent


# -- mode, checkout, figures -----------------------------------------------------------------------------------
def test_tutorial_mode_reads_and_validates_the_variable(monkeypatch):
    monkeypatch.delenv("AVEX_HUB_TUTORIAL_MODE", raising=False)
    assert tutorial_mode() == "real"
    monkeypatch.setenv("AVEX_HUB_TUTORIAL_MODE", "ci")
    assert tutorial_mode() == "ci"
    assert tutorial_mode("real") == "real"  # an explicit value wins over the variable
    for wrong in ("CI", "", "fake", " real"):
        monkeypatch.setenv("AVEX_HUB_TUTORIAL_MODE", wrong)
        with pytest.raises(ValueError, match=f"must be 'real' or 'ci', got {wrong!r}"):
            tutorial_mode()
        with pytest.raises(ValueError, match="must be 'real' or 'ci'"):
            tutorial_mode(wrong)


def test_find_repo_root_finds_the_checkout_and_names_what_it_searched(tmp_path):
    assert find_repo_root([tmp_path, REPO / "notebooks", REPO]) == REPO
    assert find_repo_root([str(REPO), tmp_path]) == REPO
    half = tmp_path / "half"  # hubconf.py without the tiny checkpoint is not a usable checkout
    half.mkdir()
    (half / "hubconf.py").write_text("")
    with pytest.raises(FileNotFoundError, match="tests/fixtures/beats-tiny") as error:
        find_repo_root([half, tmp_path / "missing"])
    assert str(half) in str(error.value) and str(tmp_path / "missing") in str(error.value)


def test_show_refuses_outside_a_kernel_and_records_nothing():
    plt = pytest.importorskip("matplotlib.pyplot")

    log = FigureLog()
    fig, _ = plt.subplots()
    try:
        with pytest.raises(RuntimeError, match="no IPython kernel"):
            log.show(fig, "a title")
        with pytest.raises(TypeError, match="non-empty string"):
            show(fig, "", log)
    finally:
        plt.close(fig)
    assert len(log) == 0 and list(log) == []


def test_figure_log_lists_titles_in_order():
    log = FigureLog()
    log.titles += ["first", "second"]
    assert len(log) == 2 and list(log) == ["first", "second"] and "second" in repr(log)


# -- the real-mode loader, on a local stand-in for the BEANS-Zero shards ------------------------------------------
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
sf = pytest.importorskip("soundfile")


def _shard(path: Path, groups: list[list[dict]]) -> None:
    schema = pa.schema([("id", pa.string()), ("dataset_name", pa.string()), ("audio", pa.list_(pa.float32())),
                        ("output", pa.string()), ("metadata", pa.string()), ("instruction_text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for rows in groups:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))  # one row group per call


def _row(i: int, subset: str, label: str, rate_key: str = "sample_rate", rate: int = 44100) -> dict:
    audio = np.random.default_rng(i).uniform(-0.5, 0.5, 800 + 37 * i).astype(np.float32)
    return {"id": f"{subset}-{i}", "dataset_name": subset, "audio": audio.tolist(), "output": f" {label} ",
            "metadata": json.dumps({rate_key: rate}), "instruction_text": "What species is this?"}


@pytest.fixture()
def beans(tmp_path):
    source = tmp_path / "beans-zero"
    source.mkdir()
    labels = ["Beluga, White Whale"] * 4 + ["Sperm Whale"] * 3 + ["Walrus"]
    watkins = [_row(i, "watkins", label, "sample_rate" if i % 2 else "sampling_rate", 44100 if i % 3 else 16000)
               for i, label in enumerate(labels)]
    _shard(source / "shard-00000.parquet", [[_row(90, "esc50", "dog"), *watkins[:3], _row(91, "esc50", "cat")],
                                             [_row(92, "esc50", "rain")]])
    (source / "more").mkdir()  # shards in a sub-folder are found too
    _shard(source / "more" / "shard-00001.parquet", [watkins[3:]])
    (source / "README.md").write_text("not a shard")
    return source, watkins


def test_fetch_beans_zero_writes_the_subset_and_a_split_manifest(beans, tmp_path):
    source, watkins = beans
    manifest = fetch_beans_zero("watkins", tmp_path / "out", source=str(source), seed=3, progress=False)
    assert manifest == tmp_path / "out" / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_id = {Path(row["path"]).stem: row for row in rows}  # clips/<label>/<id>.wav
    assert sorted(by_id) == sorted(w["id"] for w in watkins) and len(rows) == len(watkins)
    for original in watkins:
        row = by_id[original["id"]]
        assert row["label"] == original["output"].strip()
        assert Path(row["path"]).parent.name == row["label"]
        audio, rate = sf.read(manifest.parent / row["path"], dtype="float32")
        assert rate == json.loads(original["metadata"]).popitem()[1]
        np.testing.assert_array_equal(audio, np.asarray(original["audio"], dtype=np.float32))
    splits = {}
    for row in rows:
        splits.setdefault(row["label"], []).append(row["split"])
    # 70/15/15 per species with at least 3 clips; a species with fewer stays in train.
    assert sorted(splits["Beluga, White Whale"]) == ["test", "train", "train", "val"]
    assert sorted(splits["Sperm Whale"]) == ["test", "train", "val"]
    assert splits["Walrus"] == ["train"]
    # A finished manifest is reused without reading the source again; the same seed gives the same split.
    assert fetch_beans_zero("watkins", tmp_path / "out", source=str(tmp_path / "gone")) == manifest
    again = fetch_beans_zero("watkins", tmp_path / "again", source=str(source), seed=3, progress=False)
    assert again.read_text() == manifest.read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clips", "manifest.csv"]  # no temporary left


def test_fetch_beans_zero_reports_what_is_missing(beans, tmp_path):
    source, _ = beans
    with pytest.raises(ValueError, match="no rows with dataset_name == 'hiceas'"):
        fetch_beans_zero("hiceas", tmp_path / "none", source=str(source), progress=False)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "README.md").write_text("no shards here")
    with pytest.raises(FileNotFoundError, match="no shard"):
        fetch_beans_zero("watkins", tmp_path / "empty", source=str(nothing), progress=False)
    with pytest.raises(FileNotFoundError, match="could not list BEANS-Zero shards in no-such-protocol://x"):
        fetch_beans_zero("watkins", tmp_path / "unlisted", source="no-such-protocol://x", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    row = _row(5, "watkins", "Walrus")
    row["metadata"] = "{}"
    _shard(bad / "shard-0.parquet", [[row]])
    with pytest.raises(ValueError, match="row id watkins-5 has no sample_rate"):
        fetch_beans_zero("watkins", tmp_path / "bad-out", source=str(bad), progress=False)
    assert not (tmp_path / "bad-out" / "manifest.csv").exists()
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"id": ["a"], "dataset_name": ["watkins"]}), other / "shard-0.parquet")
    with pytest.raises(ValueError, match=r"no column\(s\) \['audio', 'output', 'metadata'\]"):
        fetch_beans_zero("watkins", tmp_path / "other-out", source=str(other), progress=False)


def test_fetch_beans_zero_checks_its_arguments(beans, tmp_path):
    source, _ = beans
    for fractions in ((0.7, 0.3), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2)):
        with pytest.raises(ValueError, match="three non-negative train/val/test fractions summing to 1"):
            fetch_beans_zero("watkins", tmp_path / "x", source=str(source), fractions=fractions)
    with pytest.raises(TypeError, match="dataset_name such as 'watkins'"):
        fetch_beans_zero("", tmp_path / "x", source=str(source))
    assert not (tmp_path / "x").exists()


# -- the model's frequency axis, the mode's model and data --------------------------------------------------------
def test_mel_band_hz_matches_the_peaks_of_the_model_filterbank():
    import torch

    from avex_hub.encoder.fbank import FbankConfig, mel_filterbank
    from avex_hub.tutorial import mel_band_hz

    config = FbankConfig()
    centres = mel_band_hz(config)
    weights = mel_filterbank(config)
    weights = weights if weights.shape[0] == config.num_mel_bins else weights.T  # [bands, fft bins]
    bin_hz = config.sample_rate / config.n_fft
    peaks = torch.argmax(weights, dim=1).numpy() * bin_hz  # brute force: where each triangle is highest
    assert centres.shape == (128,) and np.all(np.diff(centres) > 0)
    assert 20 < centres[0] < 60 and 7700 < centres[-1] < 8000  # 20 Hz .. Nyquist of 16 kHz audio
    # The lowest bands are narrower than an FFT bin (some get no weight at all): check those whose apex a bin hits.
    sampled = (weights.max(dim=1).values > 0.5).numpy()
    assert sampled.sum() > 100 and np.abs(peaks - centres)[sampled].max() <= bin_hz / 2
    assert np.allclose(mel_band_hz(FbankConfig(sample_rate=32000))[-1], 15500, rtol=0.02)  # follows the rate


def test_mel_axis_khz_puts_ticks_on_the_bands_of_those_frequencies():
    plt = pytest.importorskip("matplotlib.pyplot")
    from avex_hub.tutorial import mel_axis_khz, mel_band_hz

    fig, ax = plt.subplots()
    try:
        mel_axis_khz(ax, ticks_khz=(1, 8))
        ticks = ax.get_yticks()
        centres = mel_band_hz()
        assert abs(centres[int(ticks[0])] - 1000) < 60 and int(ticks[1]) == 127
        assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "8"] and "kHz" in ax.get_ylabel()
        with pytest.raises(ValueError, match="axis must be 'x' or 'y'"):
            mel_axis_khz(ax, axis="z")
    finally:
        plt.close(fig)


def test_load_data_and_load_model_in_ci_mode(tmp_path):
    from avex_hub.tutorial import load_data, load_model

    data = load_data("ci", tmp_path, seed=0, long_recordings=1)
    with open(data.manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and len({r["label"] for r in rows}) == 5 and data.clip_s == 2.0
    assert len(data.synthetic.long_recordings) == 1
    model = load_model("ci", repo_root=REPO)
    assert (model.num_layers, model.embedding_dim, model.sample_rate) == (3, 64, 16000)
    with pytest.raises(ValueError, match="must be 'real' or 'ci'"):
        load_data("fake", tmp_path)


def test_load_data_real_mode_reads_beans_zero_from_the_given_source(beans, tmp_path):
    from avex_hub.tutorial import load_data

    source, watkins = beans
    data = load_data("real", tmp_path, source=str(source), seed=0)
    assert data.manifest == tmp_path / "beans-zero-watkins" / "manifest.csv" and data.manifest.is_file()
    assert data.clip_s == 3.0 and data.synthetic is None
    with open(data.manifest, newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(watkins)


@pytest.mark.network
def test_fetch_beans_zero_real_watkins_subset_from_the_hub(tmp_path):
    # Real mode's data: the Watkins clips of BEANS-Zero on the Hub (skipped unless AVEX_HUB_NETWORK_TESTS=1). The
    # printed size and time are what notebooks/README.md quotes once measured (run with -s).
    import time

    from avex_hub.tutorial import BEANS_ZERO

    start = time.perf_counter()
    manifest = fetch_beans_zero("watkins", tmp_path / "watkins", source=BEANS_ZERO, seed=0, progress=False)
    seconds = time.perf_counter() - start
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    species = {row["label"] for row in rows}
    assert len(species) == 31 and len(rows) >= 100, (len(species), len(rows))
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    for row in rows[:20]:
        info = sf.info(manifest.parent / row["path"])
        assert 0 < info.duration <= 3.01 and info.samplerate >= 1000
    size = sum(p.stat().st_size for p in (tmp_path / "watkins").rglob("*.wav"))
    print(f"\nwatkins: {len(rows)} clips of {len(species)} species, {size / 1e6:.0f} MB of WAV, {seconds:.0f} s")
    from huggingface_hub import HfApi

    from avex_hub.tutorial import BEANS_ZERO_REPOSITORY, BEANS_ZERO_REVISION

    head = HfApi().dataset_info(BEANS_ZERO_REPOSITORY).sha  # the commit to pin in avex_hub.tutorial
    print(f"BEANS-Zero head revision {head}; pinned: {BEANS_ZERO_REVISION or '(none yet)'}")
