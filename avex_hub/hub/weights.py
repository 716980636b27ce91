"""The published esp-aves2 weights, described as data.

A model is its architecture config plus one of these entries; nothing else changes behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoder.beats import BEATsConfig
from ..encoder.preprocessing import Preprocessing  # the model carries it; each entry names one

__all__ = ["WeightsEntry", "WEIGHTS", "get_weights"]

LICENCE = "CC-BY-NC-SA-4.0"


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint on the Hugging Face Hub."""

    name: str  # the hub entry point / CLI name
    repo_id: str
    filename: str
    sha256: str
    label_map_filename: str | None  # None: encoder only, no species head
    # SHA-256 of the published label map, checked on every load when set. None: not pinned yet (the published
    # digests were not known when this was written: no Hub access); the Hub cache's content address is still
    # checked. `AVEX_HUB_NETWORK_TESTS=1 pytest tests/test_network.py -s` prints the digests to pin.
    label_map_sha256: str | None = None
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


# The training-time settings each file was trained with, as avex 1.4.0 publishes them (api/configs/official_models/
# <name>.yml, init_config). Inference ignores them; fine-tuning starts from them: dropouts and layer drop act in train
# mode, and the gradient decay ratio is the default layer-wise learning-rate decay (avex_hub.heads.finetune).
_SL_TRAINING = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "dropout_input": 0.0,
                "encoder_layerdrop": 0.05, "layer_wise_gradient_decay_ratio": 0.6}
_NATURELM_TRAINING = {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "dropout_input": 0.1,
                      "encoder_layerdrop": 0.05, "layer_wise_gradient_decay_ratio": 1.0}

WEIGHTS: dict[str, WeightsEntry] = {
    entry.name: entry
    for entry in [
        WeightsEntry(
            name="esp_aves2_sl_beats_all",
            repo_id="EarthSpeciesProject/esp-aves2-sl-beats-all",
            filename="esp-aves2-sl-beats-all.safetensors",
            sha256="25dc242853822de6e35228b22c285886162b5f787d162280e0277c010a510e91",
            label_map_filename="label_map.json",
            config=BEATsConfig(**_SL_TRAINING),
            description="BEATs post-trained (supervised) on Xeno-canto, iNaturalist, Watkins, "
            "the Animal Sound Archive and AudioSet; species head over its label map.",
        ),
        WeightsEntry(
            name="esp_aves2_sl_beats_bio",
            repo_id="EarthSpeciesProject/esp-aves2-sl-beats-bio",
            filename="esp-aves2-sl-beats-bio.safetensors",
            sha256="1881788eb6d059d7b005e1c68235906fcb12bf3a6cde824cec7cbdc34dcb9fc3",
            label_map_filename="label_map.json",
            config=BEATsConfig(**_SL_TRAINING),
            description="BEATs post-trained (supervised) on the bioacoustic sources only; species head.",
        ),
        WeightsEntry(
            name="esp_aves2_naturelm_audio_v1_beats",
            repo_id="EarthSpeciesProject/esp-aves2-naturelm-audio-v1-beats",
            filename="esp-aves2-naturelm-audio-v1-beats.safetensors",
            sha256="ce2c16141465e11852105eaee4a32bbb4663cfe8cf7a49ddc874ea5c267f78a2",
            label_map_filename=None,
            config=BEATsConfig(**_NATURELM_TRAINING),
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
