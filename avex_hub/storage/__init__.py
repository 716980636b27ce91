"""Where recordings and outputs live: local paths, or fsspec URLs (``s3://``, ``gs://``, ``https://``, ``file://``).

``locations`` tells URLs from paths, holds the run's storage options and turns a URL into a filesystem (credentials
the standard way, anonymous reads of public buckets, one-line errors that name no secret); ``listing`` walks a
prefix with the folder walk's rules; ``objects`` opens objects for ranged reads, says what identifies one (ETag or
version id, and size) and writes outputs to object storage. The lowest layer: nothing of the package is imported,
and fsspec only when a URL is first used (the ``cloud`` extra).
"""

from .._lazy import lazy_modules

_MODULES = ("listing", "locations", "objects")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
