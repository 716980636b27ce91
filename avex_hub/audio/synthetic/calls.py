"""The made-up species of the synthetic dataset and their calls: signal primitives (tones, FM sweeps, band noise),
one renderer per call structure, and :func:`synthesize_call`.

Each species has a call structure (FM up- or down-sweeps, harmonic stacks, trills, click trains, warbles, stepped
tones, noise buzzes) and a repertoire of three call types. Individuals have a stable "voice" (pitch offset and
tempo) so individual identification is learnable; each rendition adds small jitter. All sound lies below 7.8 kHz,
so resampling to the model's 16 kHz loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import SAMPLE_RATE

__all__ = ["SPECIES", "SpeciesSpec", "NUM_CALL_TYPES", "synthesize_call", "random_stream", "pink_noise"]

_TAU = 2.0 * np.pi


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
NUM_CALL_TYPES = len(SPECIES[0].call_types)  # every species has a repertoire of this many call types


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


def random_stream(*keys: int) -> np.random.Generator:
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
    rng = random_stream(seed, 1, index, individual, call_type)
    pitch, tempo = _voice(individual)
    pitch *= 2.0 ** (rng.normal(0.0, 0.15) / 12.0)
    tempo *= 1.0 + rng.normal(0.0, 0.03)
    call = _RENDER[spec.structure](call_type, pitch, tempo, int(sample_rate), rng)
    return (call / max(np.abs(call).max(), 1e-9)).astype(np.float32)


def pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS coloured noise, power ~ 1/f**alpha with alpha in [0.8, 1.6] (pink towards brown), below 7.8 kHz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum * freqs ** (-rng.uniform(0.8, 1.6) / 2.0) * (freqs < _top(sr)), n)
    noise -= noise.mean()
    return noise / max(np.sqrt(np.mean(noise ** 2)), 1e-12)
