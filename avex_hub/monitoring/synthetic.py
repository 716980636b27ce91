"""A synthetic survey with known truth: sites, days, recorders that write their own metadata, and every call listed.

For the tutorial, the tests and the benchmark of monitoring outputs, offline in seconds::

    survey = make_synthetic_survey("survey/", sites=3, days=3, seed=0)
    survey.recordings        # site_A/20260601_043000.WAV ... (AudioMoth header; the last site a Song Meter, GUANO)
    survey.deployments       # deployments.csv: folder -> site, latitude, longitude, dates, Europe/Berlin
    survey.calls             # calls.csv: file, label, start_s, end_s of every call
    survey.training          # training/*.wav: recordings of the same species to train a probe on

Each site is occupied by each species with probability ``occupancy`` (fixed per site); an occupied species calls on
a given day with probability ``detection``; calls (:func:`avex_hub.audio.synthetic.synthesize_call`, random
individuals and call types) are at least ``spacing_s`` apart over white noise, so each call is its own event.
The recorders: AudioMoths write "Recorded at HH:MM:SS DD/MM/YYYY (UTC+2) by AudioMoth <serial>" in the ``ICMT``
entry of a ``LIST`` chunk before the audio and name files ``YYYYMMDD_HHMMSS.WAV``; the Song Meter writes a GUANO
``guan`` chunk after the audio (Timestamp with offset, Serial, Loc Position) and names files
``<prefix>_YYYYMMDD_HHMMSS.wav``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.arrays import SAMPLE_RATE
from ..audio.synthetic import SPECIES, synthesize_call

__all__ = ["SyntheticSurvey", "make_synthetic_survey", "train_survey_probe"]

_OFFSET = dt.timezone(dt.timedelta(hours=2))  # Central European Summer Time: the survey is in June


@dataclass
class SyntheticSurvey:
    """What :func:`make_synthetic_survey` wrote; ``present[(site, day, label)]``: the label called there that day."""

    root: Path
    deployments: Path
    recordings: list[Path]
    training: list[Path]
    calls: Path
    labels: list[str]
    sites: list[str]
    present: dict[tuple[str, str, str], bool]

    def call_table(self) -> dict[str, list[tuple[str, float, float]]]:
        """``{file: [(label, start_s, end_s)]}`` of every recording, training ones included."""
        out: dict[str, list[tuple[str, float, float]]] = {str(p): [] for p in self.recordings + self.training}
        with open(self.calls, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                out[str(self.root / row["file"])].append((row["label"], float(row["start_s"]), float(row["end_s"])))
        return out

    def window_truth(self, files, starts, ends, *, min_fraction: float = 0.5) -> np.ndarray:
        """Multi-hot ``[windows, labels]``: a window holds a label when it covers at least ``min_fraction`` of one
        of its calls (what a reviewer listening to the window would say)."""
        calls = self.call_table()
        out = np.zeros((len(files), len(self.labels)), np.float32)
        for i, (f, s, e) in enumerate(zip(files, starts, ends)):
            for label, a, b in calls[str(f)]:
                if min(e, b) - max(s, a) >= min_fraction * (b - a):
                    out[i, self.labels.index(label)] = 1.0
        return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _write_wav(path: Path, audio: np.ndarray, rate: int, before: bytes = b"", after: bytes = b"") -> None:
    """Mono 16-bit PCM with metadata chunks before or after the audio."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    body = b"WAVE" + _chunk(b"fmt ", fmt) + before + _chunk(b"data", data) + after
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _audiomoth_header(start: dt.datetime, serial: str) -> bytes:
    comment = (f"Recorded at {start:%H:%M:%S %d/%m/%Y} (UTC+2) by AudioMoth {serial} at medium gain while battery "
               "was 4.2V and temperature was 15.0C.")
    return _chunk(b"LIST", b"INFO" + _chunk(b"ICMT", comment.encode("ascii").ljust(384, b"\0"))
                  + _chunk(b"IART", f"AudioMoth {serial}".encode("ascii").ljust(32, b"\0")))


def _guano(start: dt.datetime, serial: str, lat: float, lon: float) -> bytes:
    text = (f"GUANO|Version: 1.0\nMake: Wildlife Acoustics, Inc.\nModel: Song Meter Mini\nSerial: {serial}\n"
            f"Timestamp: {start.isoformat()}\nLoc Position: {lat:.5f} {lon:.5f}\n").encode("utf-8")
    return _chunk(b"guan", text + (b" " if len(text) % 2 else b""))


def _bout(label: str, rate: int, rng: np.random.Generator, longest_s: float = 2.0) -> np.ndarray:
    """A song bout: 2 to 5 renditions of one call type of one individual, 0.1 to 0.3 s apart, at most
    ``longest_s`` long (renditions that would pass it are left out; the first is always kept)."""
    call_type, individual = int(rng.integers(3)), int(rng.integers(4))
    parts: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 6))):
        call = synthesize_call(label, call_type=call_type, individual=individual, sample_rate=rate,
                               seed=int(rng.integers(2 ** 31)))
        gap = np.zeros(int(rng.uniform(0.1, 0.3) * rate))
        if parts and sum(map(len, parts)) + len(gap) + len(call) > longest_s * rate:
            break
        parts += [gap, call] if parts else [call]
    return np.concatenate(parts)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power falling as 1/f, like wind and distant traffic (most energy low)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)


def _render(duration_s: float, rate: int, labels: list[str], rng: np.random.Generator, *, spacing_s: float,
            calls_per_minute: float, noise: float) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Noise with bouts of ``labels`` placed at random, at least ``spacing_s`` apart: (audio, calls)."""
    audio = noise * _pink(int(duration_s * rate), rng)
    calls: list[tuple[str, float, float]] = []
    if not labels:
        return audio, calls
    t = float(rng.uniform(0.5, spacing_s))
    while True:
        label = labels[int(rng.integers(len(labels)))]
        call = _bout(label, rate, rng)
        if t + len(call) / rate > duration_s - 0.5:
            break
        start = int(t * rate)
        audio[start:start + len(call)] += rng.uniform(0.3, 0.6) * call
        calls.append((label, start / rate, (start + len(call)) / rate))
        t += len(call) / rate + spacing_s + float(rng.exponential(60.0 / calls_per_minute))
    return audio, calls


def make_synthetic_survey(root: str | os.PathLike, *, sites: int = 3, days: int = 3, recordings_per_day: int = 1,
                          recording_s: float = 60.0, species: tuple[int, ...] = (2, 4, 6), training_recordings: int = 4,
                          occupancy: float = 0.7, detection: float = 0.8, calls_per_minute: float = 6.0,
                          spacing_s: float = 5.0, noise: float = 0.02, sample_rate: int = SAMPLE_RATE,
                          first_day: str = "2026-06-01", seed: int = 0) -> SyntheticSurvey:
    """Write the survey under ``root`` (see the module docstring); the same arguments give the same files."""
    if not (1 <= sites <= 26 and days >= 1 and recordings_per_day >= 1 and species
            and all(0 <= k < len(SPECIES) for k in species)):
        raise ValueError(f"need 1-26 sites, days >= 1, recordings_per_day >= 1 and species indices "
                         f"0-{len(SPECIES) - 1}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = [SPECIES[k].name for k in species]
    names = [f"site_{chr(65 + k)}" for k in range(sites)]
    occupied = {(site, label): bool(rng.random() < occupancy) for site in names for label in labels}
    day0 = dt.date.fromisoformat(first_day)
    recordings, rows, present = [], [], {}
    deployments = ["folder,recorder,site,latitude,longitude,start,end,timezone"]
    for k, site in enumerate(names):
        lat, lon = 52.40 + 0.05 * k, 13.30 + 0.07 * k
        song_meter = k == sites - 1 and sites > 1
        serial = f"SMM0{7250 + k}" if song_meter else f"24F31905{k:08X}"
        deployments.append(f"{site},,{site},{lat:.4f},{lon:.4f},{day0},{day0 + dt.timedelta(days=days - 1)},"
                           "Europe/Berlin")
        for d in range(days):
            day = day0 + dt.timedelta(days=d)
            calling = [label for label in labels if occupied[(site, label)] and rng.random() < detection]
            present.update({(site, str(day), label): label in calling for label in labels})
            for r in range(recordings_per_day):
                start = dt.datetime(day.year, day.month, day.day, 4, 30, tzinfo=_OFFSET) + dt.timedelta(hours=r)
                audio, calls = _render(recording_s, sample_rate, calling, rng, spacing_s=spacing_s,
                                       calls_per_minute=calls_per_minute, noise=noise)
                if song_meter:
                    path = root / site / f"{serial}_{start:%Y%m%d_%H%M%S}.wav"
                    _write_wav(path, audio, sample_rate, after=_guano(start, serial, lat, lon))
                else:
                    path = root / site / f"{start:%Y%m%d_%H%M%S}.WAV"
                    _write_wav(path, audio, sample_rate, before=_audiomoth_header(start, serial))
                recordings.append(path)
                rows += [[path.relative_to(root).as_posix(), *call] for call in calls]
    training = []
    for n in range(training_recordings):
        audio, calls = _render(recording_s, sample_rate, labels, rng, spacing_s=spacing_s,
                               calls_per_minute=calls_per_minute, noise=noise)
        path = root / "training" / f"training_{n:02d}.wav"
        _write_wav(path, audio, sample_rate)
        training.append(path)
        rows += [[path.relative_to(root).as_posix(), *call] for call in calls]
    (root / "deployments.csv").write_text("\n".join(deployments) + "\n", encoding="utf-8")
    with open(root / "calls.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "start_s", "end_s"])
        writer.writerows([f, label, f"{a:.4f}", f"{b:.4f}"] for f, label, a, b in rows)
    return SyntheticSurvey(root, root / "deployments.csv", recordings, training, root / "calls.csv", labels, names,
                           present)


def train_survey_probe(model, survey: SyntheticSurvey, path: str | os.PathLike, *, window_s: float = 2.0,
                       hop_s: float = 1.0, seed: int = 0) -> Path:
    """Train a multi-label MLP probe (all layers, mean pooling) on the windows of ``survey.training`` labelled by
    :meth:`SyntheticSurvey.window_truth`, save it at ``path`` and return that path.

    The stand-in for a probe trained on a user's own labels (``avex-hub train-classifier``, notebook 05): the
    tutorial's test checkpoint has a random species head, so its scores must come from a probe.
    """
    from ..embed.extract import Embeddings
    from ..heads.probes import mlp_probe, save_probe
    from ..heads.training import train_probe
    from .scores import window_embeddings

    layers = model.layer_indices("all")
    windows = window_embeddings(model, survey.training, layers=layers, window_s=window_s, hop_s=hop_s)
    truth = survey.window_truth(windows["file"], windows["start_s"], windows["end_s"])
    probe = mlp_probe(model, len(survey.labels), layers=layers, multilabel=True, seed=seed, label_names=survey.labels)
    train_probe(probe, Embeddings.from_arrays(windows["embeddings"], truth, layers=layers), progress=False,
                epochs=300, patience=50, seed=seed, class_weights=None)
    return Path(save_probe(probe.eval(), path, label_names=survey.labels))
