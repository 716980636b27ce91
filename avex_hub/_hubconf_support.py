"""What ``hubconf.py`` needs beyond imports: keep the checkout importable and say when it is shadowed.

torch.hub puts the checkout on ``sys.path`` only while it imports ``hubconf.py``. A model pickled into
a DataLoader worker started with *spawn* (the default on macOS and Windows) is unpickled by a fresh
interpreter that must import ``avex_hub`` again; spawn copies the parent's ``sys.path``, so the
checkout has to stay there. It is appended (never put first), so it cannot shadow anything.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import avex_hub


class ShadowedCheckoutWarning(UserWarning):
    """``avex_hub`` was imported from somewhere else before this torch.hub checkout was loaded."""


def _same_code(first: str, second: str) -> bool:
    """Whether two folders hold byte-identical ``avex_hub/**/*.py`` (a pip install of this very checkout)."""
    def sources(root: str) -> dict[str, bytes]:
        package = Path(root, "avex_hub")  # every module, subpackages included
        return {path.relative_to(package).as_posix(): path.read_bytes() for path in sorted(package.rglob("*.py"))}

    try:
        return sources(first) == sources(second)
    except OSError:
        return False


def keep_checkout_importable(hubconf_file: str) -> str:
    """Append the checkout holding ``hubconf_file`` to ``sys.path``; warn if another copy is in use."""
    checkout = os.path.dirname(os.path.abspath(hubconf_file))
    in_use = os.path.dirname(os.path.dirname(os.path.abspath(avex_hub.__file__)))
    if os.path.realpath(in_use) != os.path.realpath(checkout) and not _same_code(in_use, checkout):
        warnings.warn(
            f"avex_hub is already imported from {in_use}, so the torch.hub checkout {checkout} is not the code "
            "being run. Load through torch.hub in a fresh Python process (or uninstall the other copy) to use it.",
            ShadowedCheckoutWarning,
            stacklevel=3,
        )
    elif checkout not in sys.path[1:]:
        # torch.hub inserted the checkout at sys.path[0] and removes that entry after the load:
        # a second entry at the end is what stays.
        sys.path.append(checkout)
    return checkout
