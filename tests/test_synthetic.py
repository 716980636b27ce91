"""The synthetic dataset: deterministic files, a faithful manifest, honest annotations, learnable classes."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from avex_hub.labels import LabelMap
from avex_hub.audio.synthetic import SPECIES, make_synthetic_dataset, synthesize_call

SMALL = dict(num_species=3, individuals_per_species=2, clips_per_individual=4, clip_s=1.0)


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
    kwargs = dict(SMALL, num_long_recordings=1, long_recording_s=8.0, multilabel_fraction=0.3)
    a = _digests(make_synthetic_dataset(tmp_path / "a", seed=3, **kwargs).root)
    b = _digests(make_synthetic_dataset(tmp_path / "b", seed=3, **kwargs).root)
    c = _digests(make_synthetic_dataset(tmp_path / "c", seed=4, **kwargs).root)
    assert a == b
    assert {"manifest.csv", "labels.json", "annotations.csv", "long/long_000.wav"} <= set(a)
    assert set(a) == set(c)
    audio = [name for name in a if name.endswith(".wav")]
    assert all(a[name] != c[name] for name in audio)


def _tree_digest(root) -> str:
    """One SHA-256 over every file's relative path and content under ``root``."""
    h = hashlib.sha256()
    for name, digest in _digests(root).items():
        h.update(name.encode() + b"\0" + bytes.fromhex(digest))
    return h.hexdigest()


@pytest.mark.parametrize("kwargs, expected", [
    (dict(sample_rate=[16000, 22050], multilabel_fraction=0.3, num_long_recordings=2, long_recording_s=6.0, seed=7),
     "53d52b716097e17a30467f62d173ce44e300d68b8af16b5ce03b2511df188b0c"),
    (dict(stereo=True, snr_db=None, species_names=["x y", "z", "w"], split_fractions=(0.5, 0.25, 0.25), seed=11),
     "1a31499fa7997ef6457f59a1f92882bb8c2ded9e21220c01efcc8d2e86aa79f5"),
])
def test_generated_files_are_pinned(tmp_path, kwargs, expected):
    """The files of two small calls, byte for byte, as generated before make_synthetic_dataset was split into
    functions (Linux x86-64, 16-bit WAV). A change here changes every tutorial's data: regenerate the digest only
    for an intended change of the audio or manifests, and say so."""
    assert _tree_digest(make_synthetic_dataset(tmp_path, **SMALL, **kwargs).root) == expected


def test_manifest_lists_every_clip_with_stratified_splits(tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=4, individuals_per_species=3, clips_per_individual=5,
                                  clip_s=0.5, seed=1)
    rows = _rows(data.manifest)
    assert data.num_clips == len(rows) == 4 * 3 * 5
    assert list(rows[0]) == ["path", "label", "start_s", "end_s", "individual", "call_type", "split"]
    assert data.labels == [s.name for s in SPECIES[:4]]
    assert list(LabelMap.from_json(data.labels_file).names) == data.labels
    assert json.loads(data.labels_file.read_text()) == {name: i for i, name in enumerate(data.labels)}
    for row in rows:
        path = data.root / row["path"]
        assert path.is_file() and path.parent.name == row["label"]  # class folders mirror the labels
        assert row["start_s"] == row["end_s"] == ""
        assert row["individual"].startswith(row["label"].lower().replace(" ", "_"))
        assert 0 <= int(row["call_type"]) < 3
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 8000)
    by_individual = {}
    for row in rows:
        by_individual.setdefault(row["individual"], []).append(row["split"])
    assert len(by_individual) == 12
    for splits in by_individual.values():  # 5 clips each: 3 train, 1 val, 1 test
        assert sorted(splits) == ["test", "train", "train", "train", "val"]
    assert {row["call_type"] for row in rows} == {"0", "1", "2"}


def test_annotated_calls_hold_the_energy(tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=5, individuals_per_species=2, clips_per_individual=1,
                                  num_long_recordings=2, long_recording_s=20.0, snr_db=20.0, seed=2,
                                  sample_rate=[16000, 22050])
    rows = _rows(data.annotations)
    assert list(rows[0]) == ["path", "label", "start_s", "end_s", "individual", "call_type"]
    assert {row["path"] for row in rows} == {"long/long_000.wav", "long/long_001.wav"}
    for path in data.long_recordings:
        audio, sr = sf.read(str(path))
        assert len(audio) == 20 * sr
        spans = [(float(r["start_s"]), float(r["end_s"])) for r in rows if data.root / r["path"] == path]
        assert len(spans) >= 5
        assert all(0 <= s < e <= 20.0 for s, e in spans)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # sorted, no overlaps
        inside = np.zeros(len(audio), dtype=bool)
        for s, e in spans:
            inside[int(s * sr): int(e * sr)] = True
        ratio_db = 10 * np.log10(np.mean(audio[inside] ** 2) / np.mean(audio[~inside] ** 2))
        assert ratio_db > 10.0
        for s, e in spans:  # every call individually stands out from the noise
            assert np.mean(audio[int(s * sr): int(e * sr)] ** 2) > 3 * np.mean(audio[~inside] ** 2)
    assert {row["label"] for row in rows} <= set(data.labels)


def test_multilabel_rows_join_species_and_their_metadata(tmp_path):
    data = make_synthetic_dataset(tmp_path, **SMALL, multilabel_fraction=0.5, seed=5)
    rows = _rows(data.manifest)
    mixed = [row for row in rows if ";" in row["label"]]
    assert len(mixed) == round(0.5 * len(rows))
    for row in mixed:
        labels = row["label"].split(";")
        assert len(set(labels)) == len(labels) >= 2 and set(labels) <= set(data.labels)
        assert labels[0] == (data.root / row["path"]).parent.name  # the clip's own species comes first
        assert len(row["individual"].split(";")) == len(row["call_type"].split(";")) == len(labels)


def test_mixed_sample_rates_and_stereo(tmp_path):
    data = make_synthetic_dataset(tmp_path, **SMALL, sample_rate=[16000, 22050, 48000], stereo=True, seed=0)
    infos = [sf.info(str(data.root / row["path"])) for row in _rows(data.manifest)]
    assert {i.samplerate for i in infos} == {16000, 22050, 48000}
    assert all(i.channels == 2 and i.frames == i.samplerate for i in infos)
    per_species = {}
    for row, info in zip(_rows(data.manifest), infos):  # every species gets the same mix of rates
        per_species.setdefault(row["label"], []).append(info.samplerate)
    assert len({tuple(sorted(rates)) for rates in per_species.values()}) == 1
    assert data.sample_rates == [16000, 22050, 48000]


def test_clean_audio_is_silent_between_calls(tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=2, individuals_per_species=1, clips_per_individual=2,
                                  snr_db=None, seed=0)
    for row in _rows(data.manifest):
        audio, _ = sf.read(str(data.root / row["path"]))
        assert np.mean(audio == 0) > 0.3 and np.abs(audio).max() > 0.2


def test_regenerating_replaces_our_files_and_spares_other_folders(tmp_path):
    make_synthetic_dataset(tmp_path / "d", **SMALL, num_long_recordings=1, long_recording_s=5.0)
    data = make_synthetic_dataset(tmp_path / "d", num_species=2, individuals_per_species=1, clips_per_individual=2,
                                  audio_format="flac")
    on_disk = sorted(p.relative_to(data.root).as_posix() for p in (data.root / "clips").rglob("*") if p.is_file())
    assert on_disk == sorted(row["path"] for row in _rows(data.manifest)) and on_disk[0].endswith(".flac")
    assert data.annotations is None and not (data.root / "annotations.csv").exists()
    assert not (data.root / "long").exists()
    assert json.loads((data.root / "synthetic.json").read_text())["num_species"] == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty and holds no synthetic dataset"):
        make_synthetic_dataset(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_synthesize_call():
    call = synthesize_call("Sweepus ascendens", call_type=1, individual=2, sample_rate=22050, seed=7)
    assert call.dtype == np.float32 and call.ndim == 1 and 0.1 * 22050 < len(call) < 22050
    assert np.abs(call).max() == pytest.approx(1.0)
    assert np.array_equal(call, synthesize_call(0, call_type=1, individual=2, sample_rate=22050, seed=7))
    assert not np.array_equal(call[:1000], synthesize_call(0, call_type=1, individual=3, sample_rate=22050)[:1000])
    for index, spec in enumerate(SPECIES):
        for call_type in range(len(spec.call_types)):
            x = synthesize_call(index, call_type=call_type, sample_rate=16000)
            assert np.isfinite(x).all() and 0.05 * 16000 < len(x) < 16000
    with pytest.raises(ValueError, match="unknown species 'Avis imaginaria'.*Sweepus ascendens"):
        synthesize_call("Avis imaginaria")
    with pytest.raises(ValueError, match="call types 0..2"):
        synthesize_call(0, call_type=5)


def test_species_names_and_argument_checks(tmp_path):
    data = make_synthetic_dataset(tmp_path / "named", num_species=2, individuals_per_species=1,
                                  clips_per_individual=1, species_names=["Fictus alpha", "Fictus beta"])
    assert data.labels == ["Fictus alpha", "Fictus beta"]
    assert (data.root / "clips" / "Fictus beta").is_dir()
    with pytest.raises(ValueError, match="pass num_species=2"):
        make_synthetic_dataset(tmp_path / "x", species_names=["a", "b"])
    with pytest.raises(ValueError, match="without ';'"):
        make_synthetic_dataset(tmp_path / "x", num_species=2, species_names=["a;b", "c"])
    with pytest.raises(ValueError, match=f"1..{len(SPECIES)}"):
        make_synthetic_dataset(tmp_path / "x", num_species=len(SPECIES) + 1)
    with pytest.raises(ValueError, match="at least 8000"):
        make_synthetic_dataset(tmp_path / "x", sample_rate=[16000, 4000])
    assert len({s.name for s in SPECIES}) == len(SPECIES) >= 5


def _band_features(path):
    """Hand-made features: mean and 90th percentile over time of 32 log band energies."""
    audio, _ = sf.read(str(path), dtype="float32")
    frames = np.lib.stride_tricks.sliding_window_view(audio, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames))[:, :256] ** 2
    bands = np.log(power.reshape(len(power), 32, 8).sum(-1) + 1e-8)
    return np.r_[bands.mean(0), np.percentile(bands, 90, axis=0)]


def test_species_and_individuals_are_learnable(tmp_path):
    """A linear probe on simple spectral features beats chance by a wide margin, for species and individuals."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    data = make_synthetic_dataset(tmp_path, num_species=5, individuals_per_species=3, clips_per_individual=6,
                                  clip_s=1.0, seed=0)
    rows = _rows(data.manifest)
    x = np.stack([_band_features(data.root / row["path"]) for row in rows])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train = np.array([row["split"] == "train" for row in rows])
    for key, chance, floor in (("label", 1 / 5, 0.8), ("individual", 1 / 15, 0.4)):
        y = np.array([row[key] for row in rows])
        probe = linear_model.LogisticRegression(max_iter=2000).fit(x[train], y[train])
        accuracy = probe.score(x[~train], y[~train])
        assert accuracy >= floor > 2 * chance, (key, accuracy)
