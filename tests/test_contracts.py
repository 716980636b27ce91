"""One input contract everywhere: the same files through load_audio, the datasets, AvexModel.predict and the CLI.

The stereo 48 kHz file holds a 1 kHz + 12 kHz mix on the left (0.3 each) and a 1 kHz tone (0.5) on the
right, so each channel mode has a known 16 kHz answer and a known share of energy above 8 kHz:
left 0.09 / 0.18 = 50%, mix (0.15^2) / (0.4^2 + 0.15^2) = 12.3%, both channels 0.09 / 0.43 = 20.9%, right 0%.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio.decoding import load_audio
from avex_hub.audio.high_frequency import HighFrequencyContentWarning
from avex_hub.audio.quality import AudioQualityWarning
from avex_hub.audio.datasets import AudioDataset

SR = 48_000
MODES = ["mix", 0, 1, "all"]
ROWS = {"mix": [None], 0: [0], 1: [1], "all": [0, 1]}  # source channel per output row
# Amplitude of the 1 kHz tone each row keeps at 16 kHz (the 12 kHz tone is gone), and the warned energy share.
AMPLITUDE = {None: 0.4, 0: 0.3, 1: 0.5}
HIGH_SHARE = {"mix": 0.15**2 / (0.4**2 + 0.15**2), 0: 0.5, 1: None, "all": 0.09 / 0.43}


def _tone(hz: float, seconds: float, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(round(seconds * sr)) / sr)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """root/<label>/<name>.wav (for from_folder) and root/manifest.csv; all stereo 48 kHz float WAV."""
    root = tmp_path_factory.mktemp("contract")
    left = 0.3 * _tone(1000, 1.0) + 0.3 * _tone(12000, 1.0)
    clipped = np.clip(1.5 * _tone(440, 1.0), -1.0, 1.0)
    audio = {"stereo": np.stack([left, 0.5 * _tone(1000, 1.0)], 1), "clipped": np.stack([clipped, clipped], 1),
             "silent": np.zeros((SR, 2)), "short": np.stack([0.3 * _tone(1000, 0.1)] * 2, 1)}  # 0.1 s: 1600 samples
    out = {}
    for name, data in audio.items():
        path = root / name / f"{name}.wav"
        path.parent.mkdir()
        sf.write(path, data.astype(np.float32), SR, subtype="FLOAT")
        out[name] = path
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([[f"{name}/{name}.wav", name] for name in audio])
    out["root"], out["manifest"] = root, root / "manifest.csv"
    return out


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HighFrequencyContentWarning)
        return fn(*args, **kwargs)


def _share(record) -> float:
    """The percentage a HighFrequencyContentWarning names, as a fraction."""
    [message] = [str(w.message) for w in record if issubclass(w.category, HighFrequencyContentWarning)]
    assert "48000 Hz" in message and "8 kHz" in message
    return float(re.search(r"held (\d+\.\d)% of the signal energy", message).group(1)) / 100


def _no_high_frequency_warning(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    assert not [w for w in record if issubclass(w.category, HighFrequencyContentWarning)]
    return result


# -- (a) load_audio ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_load_audio_channel_modes_give_the_known_16k_waveform(files, mode):
    audio = _quiet(load_audio, files["stereo"], channels=mode)
    assert audio.sample_rate == 16000 and audio.source_sample_rate == SR and audio.channels == ROWS[mode]
    assert audio.waveform.shape == (len(ROWS[mode]), 16000)
    expected = torch.from_numpy(_tone(1000, 1.0, 16000)).float()
    for row, channel in zip(audio.waveform, audio.channels):
        error = (row - AMPLITUDE[channel] * expected).abs()[200:-200]  # resampler edges left out
        assert error.max() < 2e-3, (mode, channel, float(error.max()))
    with pytest.raises(ValueError, match=r"channel 2 requested .* 2 channel\(s\)"):
        load_audio(files["stereo"], channels=2)


@pytest.mark.parametrize("mode", MODES)
def test_load_audio_announces_lost_high_frequencies(files, mode):
    if HIGH_SHARE[mode] is None:
        _no_high_frequency_warning(load_audio, files["stereo"], channels=mode)
        return
    with pytest.warns(HighFrequencyContentWarning, match=re.escape(str(files["stereo"]))) as record:
        load_audio(files["stereo"], channels=mode)
    assert _share(record) == pytest.approx(HIGH_SHARE[mode], abs=0.002)


def test_load_audio_flags_clipped_silent_and_short(files):
    flags = {name: load_audio(files[name]).flags[0] for name in ("clipped", "silent", "short")}
    flags["stereo"] = _quiet(load_audio, files["stereo"]).flags[0]
    assert [(f.clipped, f.silent, f.too_short) for f in flags.values()] == [
        (True, False, False), (False, True, False), (False, False, True), (False, False, False)]
    assert flags["stereo"].ok and not flags["clipped"].ok


# -- (b) datasets -----------------------------------------------------------------------------------------------------
def _datasets(files, mode):
    return {"manifest": _quiet(AudioDataset.from_manifest, files["manifest"], clip_s=None, channels=mode),
            "folder": _quiet(AudioDataset.from_folder, files["root"], clip_s=None, channels=mode)}


@pytest.mark.parametrize("mode", MODES)
def test_dataset_items_are_load_audio_rows(files, mode):
    reference = _quiet(load_audio, files["stereo"], channels=mode)
    for kind, dataset in _datasets(files, mode).items():
        items = [_quiet(dataset.__getitem__, i) for i in range(len(dataset))]
        stereo = [item for item in items if item["path"] == str(files["stereo"])]
        assert len(items) == 4 * len(ROWS[mode]) and len(stereo) == len(ROWS[mode]), kind
        for item, row, channel in zip(stereo, reference.waveform, reference.channels):
            assert torch.equal(item["audio"], row), (kind, mode)
            if mode == "all":  # every channel its own item, which says which channel it is
                assert item["channel"] == channel
        batch = dataset.collate(stereo)
        assert batch["audio"].shape == (len(ROWS[mode]), 16000)


def test_dataset_items_announce_lost_high_frequencies(files):
    dataset = _quiet(AudioDataset.from_manifest, files["manifest"], clip_s=None)
    index = next(i for i, item in enumerate(dataset.items) if item.path == files["stereo"])
    with pytest.warns(HighFrequencyContentWarning, match=re.escape(str(files["stereo"]))) as record:
        dataset[index]
    assert _share(record) == pytest.approx(HIGH_SHARE["mix"], abs=0.002)


def test_dataset_items_carry_quality_flags(files):
    dataset = _quiet(AudioDataset.from_manifest, files["manifest"], clip_s=1.0)
    items = [_quiet(dataset.__getitem__, i) for i in range(len(dataset))]
    flags = {Path(item["path"]).stem: item["flags"].tolist() for item in items}
    assert flags == {"clipped": [True, False, False, False], "silent": [False, True, False, False],
                     "short": [False, False, True, False], "stereo": [False, False, False, False]}


# -- (c) AvexModel.predict ---------------------------------------------------------------------------------------------
def _scores(model, wave: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        scores = torch.sigmoid(model.logits(wave.unsqueeze(0)))[0]
    return {name: float(s) for name, s in zip(model.labels, scores)}


def _as_dict(predictions) -> dict[str, float]:
    return {p.label: p.score for p in predictions}


@pytest.mark.parametrize("mode", ["mix", 0, 1])
def test_predict_scores_the_load_audio_waveform(files, tiny_model, mode):
    k = len(tiny_model.labels)
    expected = _scores(tiny_model, _quiet(load_audio, files["stereo"], channels=mode).waveform[0])
    from_file = _as_dict(_quiet(tiny_model.predict, files["stereo"], top_k=k, channels=mode))
    array = sf.read(files["stereo"], dtype="float32", always_2d=True)[0].T  # [2, samples] at 48 kHz
    from_array = _as_dict(_quiet(tiny_model.predict, array, SR, top_k=k, channels=mode))
    for got in (from_file, from_array):
        assert got.keys() == expected.keys()
        assert all(abs(got[n] - expected[n]) < 1e-6 for n in expected), (mode, got, expected)
    if mode != 0:  # the channels really differ, so the mode is observable in the scores
        other = _scores(tiny_model, _quiet(load_audio, files["stereo"], channels=0).waveform[0])
        assert max(abs(other[n] - expected[n]) for n in expected) > 1e-4


def test_predict_announces_lost_high_frequencies(files, tiny_model):
    with pytest.warns(HighFrequencyContentWarning, match=re.escape(str(files["stereo"]))) as record:
        tiny_model.predict(files["stereo"])
    assert _share(record) == pytest.approx(HIGH_SHARE["mix"], abs=0.002)
    array = sf.read(files["stereo"], dtype="float32", always_2d=True)[0].T
    with pytest.warns(HighFrequencyContentWarning) as record:
        tiny_model.predict(array, SR, channels=0)
    assert _share(record) == pytest.approx(HIGH_SHARE[0], abs=0.002)
    _no_high_frequency_warning(tiny_model.predict, array, SR, channels=1)


def test_predict_refuses_too_short_input(files, tiny_model):
    with pytest.raises(ValueError, match="shorter than"):
        tiny_model.predict(files["short"])


def test_predict_all_channels_answers_per_channel(files, tiny_model):
    answers = _quiet(tiny_model.predict, files["stereo"], channels="all")
    assert len(answers) == 2
    for answer, channel in zip(answers, (0, 1)):  # batched rows may differ from single ones in the last bits
        single = _as_dict(_quiet(tiny_model.predict, files["stereo"], channels=channel))
        assert [p.label for p in answer] == list(single)
        assert all(abs(p.score - single[p.label]) < 1e-6 for p in answer)


@pytest.mark.parametrize("name", ["clipped", "silent"])
def test_predict_flags_clipped_and_silent_input(files, tiny_model, name):
    with pytest.warns(AudioQualityWarning, match=name):
        tiny_model.predict(files[name])


# -- (d) the CLI ------------------------------------------------------------------------------------------------------
def _embed_cli(files, tiny_dir, tmp_path, mode, inputs):
    cli = pytest.importorskip("avex_hub.cli")
    out = tmp_path / f"emb_{mode}.npz"
    code = cli.main(["embed", *map(str, inputs), "--out", str(out), "--checkpoint", str(tiny_dir), "--workers", "0",
                     "--no-progress", "--window", "1.0", "--channels", str(mode), "--format", "npz"])
    assert code == cli.EXIT_OK
    with np.load(out, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("mode", MODES)
def test_cli_embeds_the_load_audio_waveform_with_channel_index(files, tiny_dir, tiny_model, tmp_path, mode):
    expect_warning = HIGH_SHARE[mode] is not None
    if expect_warning:
        with pytest.warns(HighFrequencyContentWarning, match=re.escape(str(files["stereo"]))) as record:
            rows = _embed_cli(files, tiny_dir, tmp_path, mode, [files["stereo"]])
        assert _share(record) == pytest.approx(HIGH_SHARE[mode], abs=0.002)
    else:
        rows = _no_high_frequency_warning(_embed_cli, files, tiny_dir, tmp_path, mode, [files["stereo"]])
    reference = _quiet(load_audio, files["stereo"], channels=mode)
    assert rows["channel"].tolist() == [-1 if c is None else c for c in reference.channels]  # -1: the mix
    assert rows["start_s"].tolist() == [0.0] * len(ROWS[mode]) and rows["end_s"].tolist() == [1.0] * len(ROWS[mode])
    with torch.no_grad():
        expected = tiny_model.embed(reference.waveform, layer=-1).numpy()
    np.testing.assert_allclose(rows["embeddings"], expected, atol=1e-4, rtol=0)


def test_cli_flags_clipped_silent_and_short_windows(files, tiny_dir, tmp_path):
    names = ["clipped", "silent", "short", "stereo"]
    rows = _quiet(_embed_cli, files, tiny_dir, tmp_path, "mix", [files[n] for n in names])
    flags = {Path(f).stem: row.tolist() for f, row in zip(rows["file"], rows["flags"])}
    assert flags == {"clipped": [True, False, False, False], "silent": [False, True, False, False],
                     "short": [False, False, True, False], "stereo": [False, False, False, False]}
    assert math.isclose(float(rows["end_s"][list(rows["file"]).index(str(files["short"]))]), 0.1, abs_tol=1e-9)
