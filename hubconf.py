"""torch.hub entry points for Earth Species Project's esp-aves2 BEATs encoders.

    model = torch.hub.load("earthspecies/avex", "esp_aves2_sl_beats_all")

Everything lives in the uniquely named package ``avex_hub`` next to this file; this module only
imports from it, so ``torch.hub.help`` and ``torch.hub.list`` stay cheap.
"""

dependencies = ["torch", "numpy", "safetensors", "huggingface_hub", "soundfile", "soxr"]

try:  # a different avex_hub imported earlier in this process would otherwise fail obscurely below
    from avex_hub._hubconf_support import keep_checkout_importable as _keep_checkout_importable
except ImportError as _error:
    raise ImportError(f"this torch.hub checkout cannot load: another 'avex_hub' is already imported ({_error}). "
                      "Load through torch.hub in a fresh Python process, or uninstall the other copy.") from _error
from avex_hub.entrypoints import *  # noqa: E402,F401,F403  the entry points: avex_hub.entrypoints.__all__

_keep_checkout_importable(__file__)  # spawn-started DataLoader workers must be able to import avex_hub
