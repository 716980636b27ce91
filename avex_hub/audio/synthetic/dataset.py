"""The synthetic dataset on disk: clips and long recordings rendered from the plan (calls placed at known
offsets, then noise at an SNR), written as audio files with a manifest, a label map, annotations and the
generation settings; :func:`make_synthetic_dataset`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arrays import SAMPLE_RATE
from .calls import NUM_CALL_TYPES, pink_noise, random_stream, synthesize_call
from .plan import GenerationSettings, PlannedClip, checked_settings, plan_clips

__all__ = ["SyntheticDataset", "make_synthetic_dataset"]

_MARKER = "synthetic.json"  # the generation settings; marks a folder as ours to regenerate


@dataclass
class SyntheticDataset:
    """What :func:`make_synthetic_dataset` wrote. ``labels`` is the label order (also in ``labels.json``)."""

    root: Path
    manifest: Path
    labels: list[str]
    num_clips: int
    annotations: Path | None
    long_recordings: list[Path]
    labels_file: Path | None = None
    sample_rates: list[int] = field(default_factory=list)
    seed: int = 0


class _Scene:
    """A recording being assembled: calls placed at known sample offsets, then noise at an SNR."""

    def __init__(self, num_samples: int, sr: int, channels: int, rng: np.random.Generator) -> None:
        self.sr, self.rng = sr, rng
        self.signal = np.zeros((num_samples, channels))
        self.active = np.zeros(num_samples, dtype=bool)

    def add(self, call: np.ndarray, start: int, gain: float = 1.0) -> tuple[float, float]:
        call = call[: len(self.active) - start]
        pan = self.rng.uniform(0.3, 1.0, self.signal.shape[1]) if self.signal.shape[1] > 1 else np.ones(1)
        self.signal[start:start + len(call)] += gain * call[:, None] * pan
        self.active[start:start + len(call)] = True
        return start / self.sr, (start + len(call)) / self.sr

    def render(self, snr_db: float | None) -> np.ndarray:
        out = self.signal.copy()
        if snr_db is not None:
            power = np.mean(self.signal[self.active] ** 2) if self.active.any() else 1e-4
            scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
            for c in range(out.shape[1]):
                out[:, c] += scale * pink_noise(len(out), self.sr, self.rng)
        return (out * self.rng.uniform(0.3, 0.8) / max(np.abs(out).max(), 1e-9)).astype(np.float32)


# -- synthesis ----------------------------------------------------------------------------------------------------
def _unit_call(species: int, individual: int, call_type: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A call scaled to unit RMS, so sparse calls (click trains) are as loud as tonal ones."""
    call = synthesize_call(species, call_type=call_type, individual=individual, sample_rate=sr,
                           seed=int(rng.integers(2 ** 31)))
    return call.astype(np.float64) / max(np.sqrt(np.mean(call.astype(np.float64) ** 2)), 1e-9)


def _render_clip(clip: PlannedClip, settings: GenerationSettings) -> np.ndarray:
    """A clip's audio ``[samples, channels]``: its own individual calls one to three times (one per slot of the
    clip, fewer for clips under 3 s), each other caller once, then noise at ``settings.snr_db``."""
    rng, sr = clip.rng, clip.rate
    n = int(round(settings.clip_s * sr))
    scene = _Scene(n, sr, settings.channels, rng)
    for m, (species, individual, call_type) in enumerate(clip.callers):
        calls = 1 if m else 1 + int(rng.integers(max(1, min(3, int(settings.clip_s)))))
        slot = n // calls
        for c in range(calls):
            call = _unit_call(species, individual, call_type, rng, sr)[:slot]
            scene.add(call, c * slot + int(rng.integers(slot - len(call) + 1)), rng.uniform(0.5, 1.0))
    return scene.render(settings.snr_db)


def _render_long_recording(number: int, settings: GenerationSettings) -> tuple[np.ndarray, int, list[tuple]]:
    """Long recording ``number``: calls of random individuals, 0.4 to 2.5 s apart, until ``long_recording_s``.

    Returns the audio ``[samples, channels]``, its sample rate and the calls as ``(species, individual,
    call type, start_s, end_s)``.
    """
    s = settings
    rng = random_stream(s.seed, 5, number)
    sr = s.rates[number % len(s.rates)]
    scene = _Scene(int(round(s.long_recording_s * sr)), sr, s.channels, rng)
    calls, t = [], rng.uniform(0.2, 1.0)
    while True:
        species, individual, call_type = (int(rng.integers(k)) for k in (s.num_species, s.individuals_per_species,
                                                                          NUM_CALL_TYPES))
        call = _unit_call(species, individual, call_type, rng, sr)
        if t + len(call) / sr > s.long_recording_s - 0.2:
            break
        start_s, end_s = scene.add(call, int(t * sr), rng.uniform(0.5, 1.0))
        calls.append((species, individual, call_type, start_s, end_s))
        t = end_s + rng.uniform(0.4, 2.5)
    return scene.render(s.snr_db), sr, calls


# -- the files ----------------------------------------------------------------------------------------------------
def _write_audio(path: Path, audio: np.ndarray, sr: int, audio_format: str) -> None:
    """16-bit PCM; ``audio`` is ``[samples, channels]``, written mono when it has one channel."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio if audio.shape[1] > 1 else audio[:, 0], sr, subtype="PCM_16",
             format=audio_format.upper())


def _write_clips(root: Path, settings: GenerationSettings) -> list[list]:
    """Synthesize and write every planned clip; returns their manifest rows (paths relative to ``root``)."""
    rows = []
    for clip in plan_clips(settings):
        name = f"{settings.slug(clip.species)}_i{clip.individual:02d}_{clip.number:03d}.{settings.audio_format}"
        rel = Path("clips") / settings.labels[clip.species] / name
        _write_audio(root / rel, _render_clip(clip, settings), clip.rate, settings.audio_format)
        rows.append([rel.as_posix(), ";".join(settings.labels[c[0]] for c in clip.callers), "", "",
                     ";".join(settings.individual_name(c[0], c[1]) for c in clip.callers),
                     ";".join(str(c[2]) for c in clip.callers), clip.split])
    return rows


def _write_long_recordings(root: Path, settings: GenerationSettings) -> tuple[list[Path], list[list]]:
    """Synthesize and write the long recordings; returns their paths and one annotation row per call."""
    paths, events = [], []
    for number in range(settings.num_long_recordings):
        audio, sr, calls = _render_long_recording(number, settings)
        rel = Path("long") / f"long_{number:03d}.{settings.audio_format}"
        events += [[rel.as_posix(), settings.labels[species], f"{start_s:.4f}", f"{end_s:.4f}",
                    settings.individual_name(species, individual), call_type]
                   for species, individual, call_type, start_s, end_s in calls]
        _write_audio(root / rel, audio, sr, settings.audio_format)
        paths.append(root / rel)
    return paths, events


def _write_label_map(path: Path, labels: list[str]) -> None:
    """``{"label": index}`` in label order, the format :class:`avex_hub.labels.LabelMap` reads."""
    path.write_text(json.dumps({name: i for i, name in enumerate(labels)}, indent=1) + "\n", encoding="utf-8")


def make_synthetic_dataset(root: str | os.PathLike, *, num_species: int = 5, individuals_per_species: int = 3,
                           clips_per_individual: int = 8, clip_s: float = 2.0,
                           sample_rate: int | list[int] = SAMPLE_RATE,
                           snr_db: float | None = 20.0, multilabel_fraction: float = 0.0,
                           num_long_recordings: int = 0, long_recording_s: float = 60.0, stereo: bool = False,
                           seed: int = 0, species_names: list[str] | None = None,
                           split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                           audio_format: str = "wav") -> SyntheticDataset:
    """Write a synthetic dataset under ``root`` and return where everything is.

    Layout: ``clips/<label>/<slug>_i<individual>_<n>.<format>`` (class folders, so ``from_folder`` works too),
    ``manifest.csv`` (columns ``path,label,start_s,end_s,individual,call_type,split``; paths relative to
    ``root``; multi-label rows join labels with ``;`` and list ``individual``/``call_type`` per label in the same
    order), ``labels.json`` (``{"label": index}``, the label order), and with ``num_long_recordings`` > 0,
    ``long/long_<n>.<format>`` plus ``annotations.csv`` (``path,label,start_s,end_s,individual,call_type``; one
    row per call, times in seconds; ``AudioDataset.from_manifest`` reads it as call-level items), and
    ``synthetic.json`` (the settings). ``root`` must be new, empty or an earlier synthetic dataset (replaced).

    ``sample_rate`` may be a list: clips cycle through it identically for every species (no rate/label
    confound). ``snr_db`` is the ratio of call power (over the samples where calls sound) to noise power;
    ``None`` writes clean audio. ``multilabel_fraction`` of the clips get calls of one or two other species
    mixed in. ``species_names`` renames the first ``num_species`` call structures of :data:`SPECIES`.
    Splits are stratified per individual (hence per species) with ``split_fractions`` (train, val, test).
    """
    settings = checked_settings(
        num_species=num_species, individuals_per_species=individuals_per_species,
        clips_per_individual=clips_per_individual, clip_s=clip_s, sample_rate=sample_rate, snr_db=snr_db,
        multilabel_fraction=multilabel_fraction, num_long_recordings=num_long_recordings,
        long_recording_s=long_recording_s, stereo=stereo, seed=seed, species_names=species_names,
        split_fractions=split_fractions, audio_format=audio_format)
    root = Path(root)
    _prepare(root)
    manifest, labels_file = root / "manifest.csv", root / "labels.json"
    _write_csv(manifest, ["path", "label", "start_s", "end_s", "individual", "call_type", "split"],
               _write_clips(root, settings))
    _write_label_map(labels_file, settings.labels)
    long_paths, events = _write_long_recordings(root, settings)
    annotations = root / "annotations.csv" if settings.num_long_recordings else None
    if annotations is not None:
        _write_csv(annotations, ["path", "label", "start_s", "end_s", "individual", "call_type"], events)
    (root / _MARKER).write_text(json.dumps(settings.as_json(), indent=1) + "\n", encoding="utf-8")
    return SyntheticDataset(root=root, manifest=manifest, labels=list(settings.labels), num_clips=settings.num_clips,
                            annotations=annotations, long_recordings=long_paths, labels_file=labels_file,
                            sample_rates=list(settings.rates), seed=settings.seed)


def _prepare(root: Path) -> None:
    """Make ``root``; clear the outputs of an earlier run there, but refuse a folder holding anything else."""
    if root.is_dir() and any(root.iterdir()):
        if not (root / _MARKER).is_file():
            raise FileExistsError(f"{root} is not empty and holds no synthetic dataset ({_MARKER}); "
                                  "choose a new or empty folder")
        for name in ("clips", "long"):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in ("annotations.csv", _MARKER):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
