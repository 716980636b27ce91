"""A deterministic synthetic bioacoustic dataset: real audio files and a manifest, made offline in a second.

It exists so tutorials and tests exercise the same code path as real recordings (files on disk, mixed sample
rates, stereo, a CSV manifest, detection annotations) without downloading anything::

    from avex_hub.audio.synthetic import make_synthetic_dataset
    data = make_synthetic_dataset("synthetic", num_long_recordings=1, seed=0)
    # synthetic/manifest.csv, synthetic/labels.json, synthetic/clips/<species>/*.wav,
    # synthetic/long/long_000.wav, synthetic/annotations.csv, synthetic/synthetic.json

The species are made up. Each has a call structure (FM up- or down-sweeps, harmonic stacks, trills, click
trains, warbles, stepped tones, noise buzzes) and a repertoire of three call types. Individuals have a stable
"voice" (pitch offset and tempo) so individual identification is learnable; each rendition adds small jitter.
All sound lies below 7.8 kHz, so resampling to the model's 16 kHz loses nothing. The same ``seed`` gives
byte-identical files and manifest (on one platform); a different seed gives different ones.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import SAMPLE_RATE

__all__ = ["SPECIES", "SpeciesSpec", "SyntheticDataset", "make_synthetic_dataset", "synthesize_call"]

_TAU = 2.0 * np.pi
_MARKER = "synthetic.json"  # the generation settings; marks a folder as ours to regenerate


@dataclass(frozen=True)
class SpeciesSpec:
    """A made-up species: its name, call structure, nominal band (Hz, before voice shifts) and call types."""

    name: str
    structure: str
    band_hz: tuple[float, float]
    call_types: tuple[str, ...]


SPECIES: tuple[SpeciesSpec, ...] = (
    SpeciesSpec("Sweepus ascendens", "upsweep", (1000, 3800), ("single up-sweep", "double up-sweep", "long sweep")),
    SpeciesSpec("Sweepus descendens", "downsweep", (2500, 6000), ("single down-sweep", "triplet", "steep sweep")),
    SpeciesSpec("Harmonia stratificata", "harmonic", (450, 3400), ("flat stack", "rising stack", "two notes")),
    SpeciesSpec("Trillia rapida", "trill", (2600, 3400), ("trill", "long slow trill", "alternating trill")),
    SpeciesSpec("Clicka seriata", "clicks", (3500, 6000), ("regular train", "accelerating train", "doublets")),
    SpeciesSpec("Modula undulans", "warble", (1700, 2700), ("warble", "fast warble", "two warbles")),
    SpeciesSpec("Tonus gradatus", "steps", (1100, 1700), ("descending steps", "ascending steps", "alternating")),
    SpeciesSpec("Strepitus fasciatus", "buzz", (3800, 5200), ("short buzz", "long buzz", "pulsed buzz")),
)


# -- signal primitives --------------------------------------------------------------------------------------------
def _top(sr: int) -> float:
    """Highest frequency written: below Nyquist, and below 8 kHz so resampling to 16 kHz loses nothing."""
    return min(0.47 * sr, 7800.0)


def _envelope(n: int, fade: float = 0.15) -> np.ndarray:
    """A Tukey-like window: raised-cosine fades over ``fade`` of the length at each end."""
    k = max(1, int(n * fade))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k))
    env[:k], env[n - k:] = ramp, ramp[::-1]
    return env


def _tone(freq: np.ndarray, sr: int, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A tone following the instantaneous frequency track ``freq`` (Hz); partials above ``_top(sr)`` are dropped."""
    phase = _TAU * np.cumsum(freq) / sr
    out = np.zeros(len(freq))
    for k, amp in enumerate(harmonics, start=1):
        out += amp * np.sin(k * phase) * (k * freq < _top(sr))
    return out * _envelope(len(freq))


def _sweep(f0: float, f1: float, dur: float, sr: int, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """An exponential FM sweep from ``f0`` to ``f1`` Hz lasting ``dur`` seconds."""
    n = max(8, int(dur * sr))
    return _tone(f0 * (f1 / f0) ** np.linspace(0.0, 1.0, n), sr, harmonics)


def _sequence(parts: list[np.ndarray], gaps: list[float], sr: int) -> np.ndarray:
    """Concatenate elements separated by silent gaps (seconds; one per joint)."""
    out = [parts[0]]
    for part, gap in zip(parts[1:], gaps):
        out += [np.zeros(int(gap * sr)), part]
    return np.concatenate(out)


def _band_noise(n: int, lo: float, hi: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum[(freqs < lo) | (freqs > min(hi, _top(sr)))] = 0.0
    return np.fft.irfft(spectrum, n)


# -- one renderer per call structure: (call_type, pitch factor, tempo factor, sample rate, rng) -> signal -----------
def _upsweep(t, p, r, sr, rng):
    if t == 2:
        return _sweep(1000 * p, 3800 * p, 0.40 / r, sr, (1.0, 0.3))
    one = _sweep(1000 * p, 3000 * p, 0.20 / r, sr)
    return one if t == 0 else _sequence([one, _sweep(1100 * p, 3200 * p, 0.20 / r, sr)], [0.06 / r], sr)


def _downsweep(t, p, r, sr, rng):
    if t == 1:
        return _sequence([_sweep(5000 * p * 0.93 ** k, 3000 * p, 0.07 / r, sr) for k in range(3)], [0.04 / r] * 2, sr)
    return _sweep(6000 * p, 2500 * p, 0.10 / r, sr) if t == 2 else _sweep(5400 * p, 3200 * p, 0.18 / r, sr)


def _harmonic(t, p, r, sr, rng):
    stack = (1.0, 0.6, 0.45, 0.3, 0.2, 0.12)
    n = int(0.35 / r * sr)
    if t == 2:
        return _sequence([_tone(np.full(n // 2, 520 * p), sr, stack), _tone(np.full(n // 2, 420 * p), sr, stack)],
                         [0.05 / r], sr)
    return _tone(450 * p * np.linspace(1.0, 1.25 if t == 1 else 1.0, n), sr, stack)


def _trill(t, p, r, sr, rng):
    count, rate = ((10, 22.0), (12, 16.0), (10, 22.0))[t]
    elements = [_sweep(2600 * p * (1.15 if t == 2 and k % 2 else 1.0), 3400 * p, 0.022 / r, sr) for k in range(count)]
    return _sequence(elements, [1.0 / (rate * r) - 0.022 / r] * (count - 1), sr)


def _clicks(t, p, r, sr, rng):
    """A train of damped sinusoids (short broadband clicks near 4.5 kHz): regular, accelerating or paired."""
    time = np.arange(int(0.004 * sr)) / sr
    click = np.sin(_TAU * min(4500 * p, 0.9 * _top(sr)) * time) * np.exp(-time / 0.0007)
    onsets = (np.arange(10) * 0.03, np.cumsum(np.r_[0.0, 0.04 * 0.85 ** np.arange(11)]),
              (np.arange(6)[:, None] * 0.06 + np.array([0.0, 0.008])).ravel())[t]
    starts = (onsets / r * sr).astype(int)
    out = np.zeros(starts[-1] + len(click))
    for start in starts:
        out[start:start + len(click)] += click
    return out


def _warble(t, p, r, sr, rng):
    n = int((0.3 if t == 2 else 0.5) / r * sr)
    rate = (9.0, 16.0, 9.0)[t] * r
    one = _tone(2200 * p + 450 * p * np.sin(_TAU * rate * np.arange(n) / sr), sr)
    return _sequence([one, one], [0.08 / r], sr) if t == 2 else one


def _steps(t, p, r, sr, rng):
    notes = (1600, 1450, 1300, 1150)
    notes = (notes, notes[::-1], (1600, 1150, 1600, 1150))[t]
    n = int(0.07 / r * sr)
    return _sequence([_tone(np.full(n, f * p), sr, (1.0, 0.2)) for f in notes], [0.015 / r] * 3, sr)


def _buzz(t, p, r, sr, rng):
    n = int((0.15, 0.4, 0.3)[t] / r * sr)
    noise = _band_noise(n, 3800 * p, 5200 * p, sr, rng)
    if t == 2:
        noise *= 0.5 + 0.5 * np.sign(np.sin(_TAU * 25 * r * np.arange(n) / sr))
    return noise * (0.5 - 0.5 * np.cos(_TAU * 60 * r * np.arange(n) / sr)) * _envelope(n)


_RENDER = {"upsweep": _upsweep, "downsweep": _downsweep, "harmonic": _harmonic, "trill": _trill,
           "clicks": _clicks, "warble": _warble, "steps": _steps, "buzz": _buzz}


def _rng(*keys: int) -> np.random.Generator:
    """An independent, reproducible random stream for one (seed, purpose, ...) key."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _voice(individual: int) -> tuple[float, float]:
    """An individual's stable (pitch factor, tempo factor), spread evenly by a golden-ratio sequence."""
    semitones = ((individual * 0.6180339887) % 1.0 - 0.5) * 6.0  # within +-3 semitones
    tempo = 2.0 ** (((individual * 0.7548776662 + 0.37) % 1.0 - 0.5) * 0.5)  # within +-0.25 octave
    return 2.0 ** (semitones / 12.0), tempo


def _species_index(species: str | int) -> int:
    if isinstance(species, (int, np.integer)):
        if not 0 <= species < len(SPECIES):
            raise ValueError(f"species index {species} out of range 0..{len(SPECIES) - 1}")
        return int(species)
    names = [s.name.lower() for s in SPECIES]
    if species.lower() not in names:
        raise ValueError(f"unknown species {species!r}; known: {[s.name for s in SPECIES]}")
    return names.index(species.lower())


def synthesize_call(species: str | int, *, call_type: int = 0, individual: int = 0, sample_rate: int = SAMPLE_RATE,
                    seed: int = 0) -> np.ndarray:
    """One call as float32 mono audio peaking at 1.0, for notebooks and plots.

    ``species`` is a name from :data:`SPECIES` or its index; ``call_type`` picks from its repertoire (0..2);
    ``individual`` sets the stable voice (pitch, tempo); ``seed`` sets the small rendition jitter.
    """
    index = _species_index(species)
    spec = SPECIES[index]
    if not 0 <= call_type < len(spec.call_types):
        raise ValueError(f"{spec.name} has call types 0..{len(spec.call_types) - 1} {spec.call_types}, got {call_type}")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    rng = _rng(seed, 1, index, individual, call_type)
    pitch, tempo = _voice(individual)
    pitch *= 2.0 ** (rng.normal(0.0, 0.15) / 12.0)
    tempo *= 1.0 + rng.normal(0.0, 0.03)
    call = _RENDER[spec.structure](call_type, pitch, tempo, int(sample_rate), rng)
    return (call / max(np.abs(call).max(), 1e-9)).astype(np.float32)


def _pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS coloured noise, power ~ 1/f**alpha with alpha in [0.8, 1.6] (pink towards brown), below 7.8 kHz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum * freqs ** (-rng.uniform(0.8, 1.6) / 2.0) * (freqs < _top(sr)), n)
    noise -= noise.mean()
    return noise / max(np.sqrt(np.mean(noise ** 2)), 1e-12)


# -- the dataset --------------------------------------------------------------------------------------------------
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
                out[:, c] += scale * _pink_noise(len(out), self.sr, self.rng)
        return (out * self.rng.uniform(0.3, 0.8) / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def _assign_splits(count: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    """Deterministic split labels for one group (at least one val and test clip once there are 3 clips)."""
    n_val = max(1 if count >= 3 else 0, round(count * fractions[1]))
    n_test = max(1 if count >= 3 else 0, round(count * fractions[2]))
    names = ["val"] * n_val + ["test"] * n_test
    names = ["train"] * max(0, count - len(names)) + names
    return [names[i] for i in rng.permutation(count)]


_NUM_CALL_TYPES = len(SPECIES[0].call_types)  # every species has a repertoire of this many call types


@dataclass(frozen=True)
class _Settings:
    """The checked arguments of one :func:`make_synthetic_dataset` call (``rates``: the sample rates clips cycle
    through; ``labels``: the species names in label order)."""

    num_species: int
    individuals_per_species: int
    clips_per_individual: int
    clip_s: float
    rates: list[int]
    snr_db: float | None
    multilabel_fraction: float
    num_long_recordings: int
    long_recording_s: float
    stereo: bool
    seed: int
    labels: list[str]
    split_fractions: tuple[float, float, float]
    audio_format: str

    @property
    def num_clips(self) -> int:
        return self.num_species * self.individuals_per_species * self.clips_per_individual

    @property
    def channels(self) -> int:
        return 2 if self.stereo else 1

    def slug(self, species: int) -> str:
        """A species' name as it appears in file names and individual names (``harmonia_stratificata``)."""
        return self.labels[species].lower().replace(" ", "_")

    def individual_name(self, species: int, individual: int) -> str:
        """The ``individual`` column's value for one individual, in the manifest and the annotations alike."""
        return f"{self.slug(species)}_{individual:02d}"

    def as_json(self) -> dict:
        """The settings as ``synthetic.json`` records them (this key order: the file is part of the output)."""
        return dict(num_species=self.num_species, individuals_per_species=self.individuals_per_species,
                    clips_per_individual=self.clips_per_individual, clip_s=self.clip_s, sample_rate=self.rates,
                    snr_db=self.snr_db, multilabel_fraction=self.multilabel_fraction,
                    num_long_recordings=self.num_long_recordings, long_recording_s=self.long_recording_s,
                    stereo=self.stereo, seed=self.seed, species_names=self.labels,
                    structures=[s.structure for s in SPECIES[:self.num_species]],
                    split_fractions=list(self.split_fractions), audio_format=self.audio_format)


def _checked_settings(*, num_species, individuals_per_species, clips_per_individual, clip_s, sample_rate, snr_db,
                      multilabel_fraction, num_long_recordings, long_recording_s, stereo, seed, species_names,
                      split_fractions, audio_format) -> _Settings:
    """:func:`make_synthetic_dataset`'s arguments checked (ValueError naming the bad one and what it must be)."""
    if species_names is not None:
        species_names = [str(name) for name in species_names]
        if len(species_names) != num_species:
            raise ValueError(f"species_names has {len(species_names)} names but num_species={num_species}; "
                             f"pass num_species={len(species_names)}")
        bad = [n for n in species_names if not n.strip() or any(ch in n for ch in ";/\\\n") or n in (".", "..")]
        if bad or len(set(species_names)) != len(species_names):
            raise ValueError(f"species_names must be unique, non-empty, without ';', '/', '\\\\' or newlines: {bad}")
    if not 1 <= num_species <= len(SPECIES):
        raise ValueError(f"num_species must be 1..{len(SPECIES)} (one per call structure), got {num_species}")
    rates = [int(r) for r in (sample_rate if isinstance(sample_rate, (list, tuple)) else [sample_rate])]
    if not rates or min(rates) < 8000:
        raise ValueError(f"sample rates must be at least 8000 Hz, got {sample_rate}")
    if individuals_per_species < 1 or clips_per_individual < 1 or clip_s < 0.2:
        raise ValueError("need individuals_per_species >= 1, clips_per_individual >= 1 and clip_s >= 0.2")
    if not 0.0 <= multilabel_fraction <= 1.0 or (multilabel_fraction > 0 and num_species < 2):
        raise ValueError(f"multilabel_fraction must be in [0, 1] and needs 2+ species, got {multilabel_fraction}")
    if audio_format not in ("wav", "flac") or seed < 0:
        raise ValueError(f"need audio_format 'wav' or 'flac' and a seed >= 0, got {audio_format!r}, {seed}")
    return _Settings(num_species=num_species, individuals_per_species=individuals_per_species,
                     clips_per_individual=clips_per_individual, clip_s=clip_s, rates=rates, snr_db=snr_db,
                     multilabel_fraction=multilabel_fraction, num_long_recordings=num_long_recordings,
                     long_recording_s=long_recording_s, stereo=stereo, seed=seed,
                     labels=species_names or [s.name for s in SPECIES[:num_species]],
                     split_fractions=split_fractions, audio_format=audio_format)


# -- the plan: which individual calls in which clip, at which rate, in which split -------------------------------
@dataclass(frozen=True)
class _Clip:
    """One clip of the dataset before it is synthesized.

    ``callers`` are ``(species, individual, call type)``: the first is the clip's own individual (its label),
    the others are mixed in (multi-label clips). ``rng`` is the clip's random stream, already drawn from to
    choose those others; the synthesis continues it, so each clip's audio depends on its key alone.
    """

    species: int
    individual: int
    number: int  # of the clip among its individual's clips
    rate: int
    split: str
    callers: tuple[tuple[int, int, int], ...]
    rng: np.random.Generator = field(compare=False, repr=False)


def _plan_clips(settings: _Settings) -> list[_Clip]:
    """Every clip in file order (species, then individual, then number). Call types rotate through the
    repertoire, rates cycle through ``settings.rates`` alike for every species (no rate/label confound), splits
    are stratified per individual, and ``multilabel_fraction`` of the clips (chosen by the seed) get calls of
    one or two other species."""
    seed, per_individual, rates = settings.seed, settings.clips_per_individual, settings.rates
    num_mixed = round(settings.multilabel_fraction * settings.num_clips)
    mixed = set(_rng(seed, 2).permutation(settings.num_clips)[:num_mixed].tolist())
    clips = []
    for species in range(settings.num_species):
        for individual in range(settings.individuals_per_species):
            splits = _assign_splits(per_individual, settings.split_fractions, _rng(seed, 3, species, individual))
            for number in range(per_individual):
                rng = _rng(seed, 4, species, individual, number)
                rate = rates[(individual * per_individual + number) % len(rates)]
                callers = [(species, individual, (number + individual) % _NUM_CALL_TYPES)]
                if len(clips) in mixed:
                    callers += _other_callers(species, settings, rng)
                clips.append(_Clip(species, individual, number, rate, splits[number], tuple(callers), rng))
    return clips


def _other_callers(species: int, settings: _Settings, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """One or two individuals of other species, with a call type each, to mix into a clip of ``species``."""
    others = [o for o in rng.permutation(settings.num_species).tolist() if o != species]
    return [(o, int(rng.integers(settings.individuals_per_species)), int(rng.integers(_NUM_CALL_TYPES)))
            for o in others[: 1 + int(rng.integers(2))]]


# -- synthesis ----------------------------------------------------------------------------------------------------
def _unit_call(species: int, individual: int, call_type: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A call scaled to unit RMS, so sparse calls (click trains) are as loud as tonal ones."""
    call = synthesize_call(species, call_type=call_type, individual=individual, sample_rate=sr,
                           seed=int(rng.integers(2 ** 31)))
    return call.astype(np.float64) / max(np.sqrt(np.mean(call.astype(np.float64) ** 2)), 1e-9)


def _render_clip(clip: _Clip, settings: _Settings) -> np.ndarray:
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


def _render_long_recording(number: int, settings: _Settings) -> tuple[np.ndarray, int, list[tuple]]:
    """Long recording ``number``: calls of random individuals, 0.4 to 2.5 s apart, until ``long_recording_s``.

    Returns the audio ``[samples, channels]``, its sample rate and the calls as ``(species, individual,
    call type, start_s, end_s)``.
    """
    s = settings
    rng = _rng(s.seed, 5, number)
    sr = s.rates[number % len(s.rates)]
    scene = _Scene(int(round(s.long_recording_s * sr)), sr, s.channels, rng)
    calls, t = [], rng.uniform(0.2, 1.0)
    while True:
        species, individual, call_type = (int(rng.integers(k)) for k in (s.num_species, s.individuals_per_species,
                                                                          _NUM_CALL_TYPES))
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


def _write_clips(root: Path, settings: _Settings) -> list[list]:
    """Synthesize and write every planned clip; returns their manifest rows (paths relative to ``root``)."""
    rows = []
    for clip in _plan_clips(settings):
        name = f"{settings.slug(clip.species)}_i{clip.individual:02d}_{clip.number:03d}.{settings.audio_format}"
        rel = Path("clips") / settings.labels[clip.species] / name
        _write_audio(root / rel, _render_clip(clip, settings), clip.rate, settings.audio_format)
        rows.append([rel.as_posix(), ";".join(settings.labels[c[0]] for c in clip.callers), "", "",
                     ";".join(settings.individual_name(c[0], c[1]) for c in clip.callers),
                     ";".join(str(c[2]) for c in clip.callers), clip.split])
    return rows


def _write_long_recordings(root: Path, settings: _Settings) -> tuple[list[Path], list[list]]:
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
    settings = _checked_settings(
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
