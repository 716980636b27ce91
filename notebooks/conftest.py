"""The test suite runs the tutorials in ci mode: the tiny test checkpoint and synthetic data, no network.

nbval starts each notebook's kernel with this process's environment, so setting the variable here, before any
kernel starts, is what switches the notebooks. A value already set (the GPU workflow sets ``real``) wins.
"""

import os

os.environ.setdefault("AVEX_HUB_TUTORIAL_MODE", "ci")
