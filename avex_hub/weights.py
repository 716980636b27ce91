"""The published esp-aves2 weights, described as data.

A model is its architecture config plus one of these entries; nothing else changes behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .beats import BEATsConfig
from .preprocessing import Preprocessing  # the model carries it; each entry names one

__all__ = ["Preprocessing", "WeightsEntry", "WEIGHTS", "get_weights"]

LICENCE = "CC-BY-NC-SA-4.0"


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint on the Hugging Face Hub."""

    name: str  # the hub entry point / CLI name
    repo_id: str
    filename: str
    sha256: str
    label_map_filename: str | None  # None: encoder only, no species head
    config: BEATsConfig = field(default_factory=BEATsConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    revision: str | None = None  # None: the repo's default branch; the digest pins the content
    licence: str = LICENCE
    description: str = ""

    @property
    def has_classifier(self) -> bool:
        return self.label_map_filename is not None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


WEIGHTS: dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in [
        WeightsEntry(
            name="esp_aves2_sl_beats_all",
            repo_id="EarthSpeciesProject/esp-aves2-sl-beats-all",
            filename="esp-aves2-sl-beats-all.safetensors",
            sha256="25dc242853822de6e35228b22c285886162b5f787d162280e0277c010a510e91",
            label_map_filename="label_map.json",
            description="BEATs post-trained (supervised) on Xeno-canto, iNaturalist, Watkins, "
            "the Animal Sound Archive and AudioSet; species head over its label map.",
        ),
        WeightsEntry(
            name="esp_aves2_sl_beats_bio",
            repo_id="EarthSpeciesProject/esp-aves2-sl-beats-bio",
            filename="esp-aves2-sl-beats-bio.safetensors",
            sha256="1881788eb6d059d7b005e1c68235906fcb12bf3a6cde824cec7cbdc34dcb9fc3",
            label_map_filename="label_map.json",
            description="BEATs post-trained (supervised) on the bioacoustic sources only; species head.",
        ),
        WeightsEntry(
            name="esp_aves2_naturelm_audio_v1_beats",
            repo_id="EarthSpeciesProject/esp-aves2-naturelm-audio-v1-beats",
            filename="esp-aves2-naturelm-audio-v1-beats.safetensors",
            sha256="ce2c16141465e11852105eaee4a32bbb4663cfe8cf7a49ddc874ea5c267f78a2",
            label_map_filename=None,
            config=BEATsConfig(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1),
            preprocessing=Preprocessing(clip_input=True),
            description="The BEATs audio encoder of NatureLM-audio v1; encoder only (no species head).",
        ),
    ]
}


def get_weights(name: str) -> WeightsEntry:
    """The entry for ``name`` (underscores or dashes); a ValueError lists the known names."""
    key = name.replace("-", "_")
    if key not in WEIGHTS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(WEIGHTS)}")
    return WEIGHTS[key]
