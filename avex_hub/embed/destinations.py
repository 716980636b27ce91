"""Outputs and their sidecars where the user puts them: a local path, or a URL in object storage.

:func:`writing` yields a local file to write; on success it becomes the target whole (a local rename,
:func:`avex_hub.embed.outputs.atomic_path`, or one upload: an object appears whole or not at all), on failure
nothing changes there. :func:`reading` yields a local file holding the source (a temporary copy of an object,
removed afterwards). Small sidecars (a run's settings, its shard record) go through the same two.

:class:`Staging` runs a resumable command whose ``--out`` is a URL: the run works in a local folder as always,
each finished part is uploaded to ``<out>.parts/`` as soon as it is written (so a stopped run loses nothing the
store holds), parts already in the store are fetched first (a rerun skips their inputs), and the output and its
sidecars are uploaded at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..storage.listing import list_location
from ..storage.locations import check_store, is_url, local_path
from ..storage.objects import exists as object_exists
from ..storage.objects import get_file, put_file, remove as remove_object
from .outputs import atomic_path

__all__ = ["writing", "reading", "exists", "remove", "sibling", "probe_write", "Staging"]


def sibling(target: str | os.PathLike, suffix: str) -> str:
    """``<target><suffix>`` (``out.csv`` -> ``out.csv.settings.json``), for a path or a URL."""
    return f"{os.fspath(target)}{suffix}"


@contextlib.contextmanager
def _scratch(name: str) -> Iterator[Path]:
    folder = tempfile.mkdtemp(prefix="avex-hub-")
    try:
        yield Path(folder) / name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def writing(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A local path to write ``target``'s content to; it replaces ``target`` only when the block ends normally."""
    target = local_path(os.fspath(target))
    if not is_url(target):
        with atomic_path(target, suffix) as tmp:
            yield tmp
        return
    with _scratch(f"upload{suffix}") as tmp:
        yield tmp
        put_file(tmp, target)


@contextlib.contextmanager
def reading(source: str | os.PathLike) -> Iterator[Path]:
    """A local path holding ``source`` (a URL's object is copied to a temporary file, removed after the block)."""
    source = local_path(os.fspath(source))
    if not is_url(source):
        yield Path(source)
        return
    with _scratch("download" + Path(source.split("?")[0]).suffix) as tmp:
        get_file(source, tmp)
        yield tmp


def exists(target: str | os.PathLike) -> bool:
    """Whether ``target`` (a local path or an object) is there."""
    target = local_path(os.fspath(target))
    return object_exists(target) if is_url(target) else os.path.exists(target)


def remove(target: str | os.PathLike) -> None:
    """Delete ``target`` if it is there."""
    target = local_path(os.fspath(target))
    if is_url(target):
        remove_object(target)
    else:
        Path(target).unlink(missing_ok=True)


def probe_write(url: str) -> None:
    """Before any work: the store answers about ``url`` within the check's bound
    (:func:`avex_hub.storage.locations.check_store`), and these credentials may write there (a small object written
    at ``url`` and deleted); an OSError in one line otherwise."""
    check_store(url)
    with _scratch("probe") as probe:
        probe.write_bytes(b"")
        put_file(probe, url)
    remove_object(url)


class Staging:
    """A run's outputs in a local folder, mirrored to ``target`` (a URL; see the module docstring)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.folder = Path(tempfile.mkdtemp(prefix="avex-hub-out-"))
        self.local = self.folder / self.target.rsplit("/", 1)[-1]
        self.uploaded: set[str] = set()

    @property
    def parts(self) -> Path:
        return Path(f"{self.local}.parts")

    def _remote_parts(self) -> list[str]:
        try:
            return list_location(f"{self.target}.parts/", endings=(".npz",)).files
        except FileNotFoundError:
            return []

    def probe(self) -> None:
        """Write and delete a small object beside the parts: credentials that may not write fail now, in one line."""
        probe_write(f"{self.target}.parts/.avex-hub-write-test")

    def fetch_parts(self) -> int:
        """Copy the parts the store holds into the local folder; how many there were."""
        self.parts.mkdir(parents=True, exist_ok=True)
        found = self._remote_parts()
        for url in found:
            name = url.rsplit("/", 1)[-1]
            get_file(url, self.parts / name)
            self.uploaded.add(name)
        return len(found)

    def upload_part(self, part: Path) -> None:
        """A part just written, to ``<target>.parts/`` (whole or not at all)."""
        put_file(part, f"{self.target}.parts/{part.name}")
        self.uploaded.add(part.name)

    def upload_parts(self) -> None:
        """Every local part the store lacks (after a stop, the parts written since the last upload)."""
        for part in sorted(self.parts.glob("*.npz")) if self.parts.is_dir() else []:
            if part.name not in self.uploaded:
                self.upload_part(part)

    def publish(self, suffixes: tuple[str, ...]) -> None:
        """The output, then each sidecar ``<out><suffix>``: uploaded where written, removed from the store where
        this run wrote none (an old failure list would describe another run)."""
        put_file(self.local, self.target)
        for suffix in suffixes:
            local = Path(f"{self.local}{suffix}")
            if local.is_file():
                put_file(local, f"{self.target}{suffix}")
            else:
                remove_object(f"{self.target}{suffix}")

    def publish_folder(self, folder: Path, target: str) -> None:
        """Every file of a local folder (the Raven tables) under the URL prefix ``target``."""
        for path in sorted(Path(folder).glob("*")) if Path(folder).is_dir() else []:
            put_file(path, f"{target.rstrip('/')}/{path.name}")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
