# Makes pytest import notebooks/conftest.py as ``notebooks.conftest``, so it does not take the module name
# ``conftest`` from tests/conftest.py (the tests import helpers with ``from conftest import ...``).
