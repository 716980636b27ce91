"""The package version, in the lowest module so that any layer can record it without importing the package."""

__version__ = "0.1.0"
