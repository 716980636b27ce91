"""Reading small files defensively (the lowest layer: no package imports).

A label map or config.json is small; a path that holds far more (a link to /dev/zero, a wrong file) is refused
before it is read into memory.
"""

from __future__ import annotations

import os

__all__ = ["read_capped", "unique_keys"]


def read_capped(path: str | os.PathLike, max_bytes: int, *, what: str) -> bytes:
    """The bytes of a small file, refusing more than ``max_bytes`` (a link to /dev/zero, a wrong file)."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: expected {what} of at most {max_bytes / 2**20:.0f} MiB, found a larger file (or a "
                         "stream); it is not the file it should be: restore or re-download it")
    return data


def unique_keys(source: str):
    """A ``json.loads`` ``object_pairs_hook`` refusing a key given twice in one object: ``json`` keeps the last one
    silently, which turns a label map with a repeated name into a misnumbered one. ``source`` names the file."""

    def hook(pairs: list[tuple[str, object]]) -> dict:
        found: dict = {}
        for key, value in pairs:
            if key in found:
                raise ValueError(f"{source}: the key {key!r} is given more than once (JSON would keep only the last, "
                                 "silently); give each key once")
            found[key] = value
        return found

    return hook
