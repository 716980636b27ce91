"""``python -m avex_hub.cli``: the ``avex-hub`` command."""

import sys

from . import main

if __name__ == "__main__":  # importing the module (pkgutil, the docs' API page) runs nothing
    sys.exit(main())
