"""``python -m avex_hub``: the ``avex-hub`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (pkgutil, the docs' API page) runs nothing
    sys.exit(main())
