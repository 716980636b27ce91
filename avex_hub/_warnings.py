"""Where a warning the package gives should point: the user's line, however deep the call went."""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["user_stacklevel"]

_INSIDE = (os.path.dirname(__file__), os.path.dirname(torch.__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` (for a warning raised by the calling function) of the first frame outside avex_hub and
    torch: the user's line, whether the warning comes from a forward pass, a generator of windows or a pipeline."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    return level
