"""The plan of a synthetic dataset before any audio is made: the checked arguments of one
:func:`~avex_hub.audio.synthetic.make_synthetic_dataset` call, and which individual calls in which clip, at which
sample rate, in which split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .calls import NUM_CALL_TYPES, SPECIES, random_stream

__all__ = ["GenerationSettings", "checked_settings", "PlannedClip", "plan_clips"]


def _assign_splits(count: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    """Deterministic split labels for one group (at least one val and test clip once there are 3 clips)."""
    n_val = max(1 if count >= 3 else 0, round(count * fractions[1]))
    n_test = max(1 if count >= 3 else 0, round(count * fractions[2]))
    names = ["val"] * n_val + ["test"] * n_test
    names = ["train"] * max(0, count - len(names)) + names
    return [names[i] for i in rng.permutation(count)]


@dataclass(frozen=True)
class GenerationSettings:
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


def checked_settings(*, num_species, individuals_per_species, clips_per_individual, clip_s, sample_rate, snr_db,
                     multilabel_fraction, num_long_recordings, long_recording_s, stereo, seed, species_names,
                     split_fractions, audio_format) -> GenerationSettings:
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
    return GenerationSettings(num_species=num_species, individuals_per_species=individuals_per_species,
                              clips_per_individual=clips_per_individual, clip_s=clip_s, rates=rates, snr_db=snr_db,
                              multilabel_fraction=multilabel_fraction, num_long_recordings=num_long_recordings,
                              long_recording_s=long_recording_s, stereo=stereo, seed=seed,
                              labels=species_names or [s.name for s in SPECIES[:num_species]],
                              split_fractions=split_fractions, audio_format=audio_format)


# -- the plan: which individual calls in which clip, at which rate, in which split -------------------------------
@dataclass(frozen=True)
class PlannedClip:
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


def plan_clips(settings: GenerationSettings) -> list[PlannedClip]:
    """Every clip in file order (species, then individual, then number). Call types rotate through the
    repertoire, rates cycle through ``settings.rates`` alike for every species (no rate/label confound), splits
    are stratified per individual, and ``multilabel_fraction`` of the clips (chosen by the seed) get calls of
    one or two other species."""
    seed, per_individual, rates = settings.seed, settings.clips_per_individual, settings.rates
    num_mixed = round(settings.multilabel_fraction * settings.num_clips)
    mixed = set(random_stream(seed, 2).permutation(settings.num_clips)[:num_mixed].tolist())
    clips = []
    for species in range(settings.num_species):
        for individual in range(settings.individuals_per_species):
            split_rng = random_stream(seed, 3, species, individual)
            splits = _assign_splits(per_individual, settings.split_fractions, split_rng)
            for number in range(per_individual):
                rng = random_stream(seed, 4, species, individual, number)
                rate = rates[(individual * per_individual + number) % len(rates)]
                callers = [(species, individual, (number + individual) % NUM_CALL_TYPES)]
                if len(clips) in mixed:
                    callers += _other_callers(species, settings, rng)
                clips.append(PlannedClip(species, individual, number, rate, splits[number], tuple(callers), rng))
    return clips


def _other_callers(species: int, settings: GenerationSettings,
                   rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """One or two individuals of other species, with a call type each, to mix into a clip of ``species``."""
    others = [o for o in rng.permutation(settings.num_species).tolist() if o != species]
    return [(o, int(rng.integers(settings.individuals_per_species)), int(rng.integers(NUM_CALL_TYPES)))
            for o in others[: 1 + int(rng.integers(2))]]
