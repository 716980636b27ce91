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

The package holds three modules, by what they do: ``calls`` (the species and their calls), ``plan``
(checked settings, which call goes in which clip) and ``dataset`` (rendering and writing the files).
"""

from .calls import SPECIES, SpeciesSpec, synthesize_call
from .dataset import SyntheticDataset, make_synthetic_dataset

__all__ = ["SPECIES", "SpeciesSpec", "SyntheticDataset", "make_synthetic_dataset", "synthesize_call"]
