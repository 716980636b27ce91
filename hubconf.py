"""torch.hub entry points for Earth Species Project's esp-aves2 BEATs encoders.

    model = torch.hub.load("earthspecies/avex", "esp_aves2_sl_beats_all")

Everything lives in the uniquely named package ``avex_hub`` next to this file; this module only
imports from it, so ``torch.hub.help`` and ``torch.hub.list`` stay cheap.
"""

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub", "soundfile", "soxr"]

from avex_hub.entrypoints import (  # noqa: E402,F401
    attention_probe,
    esp_aves2_naturelm_audio_v1_beats,
    esp_aves2_sl_beats_all,
    esp_aves2_sl_beats_bio,
    label_map,
    linear_probe,
    mlp_probe,
)
