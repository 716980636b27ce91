"""The one folder walk: audio files named directly plus those under folders, each once, nothing skipped in silence."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..storage.listing import list_location
from ..storage.locations import is_url, local_path

__all__ = ["AUDIO_EXTENSIONS", "AudioSearch", "find_audio"]

# File name endings taken as audio when folders are searched (CLI, class-folder datasets, noise folders); all are
# formats libsndfile decodes. A file named explicitly is read whatever its ending.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au", ".w64",
                    ".rf64", ".caf")


@dataclass
class AudioSearch:
    """What :func:`find_audio` found: audio files in order, and the folders it could not list (path -> why)."""

    files: list[str]
    failures: dict[str, str]
    hidden: int = 0  # hidden (``.name``) audio files and hidden folders left out


def find_audio(paths, *, extensions=AUDIO_EXTENSIONS, skip=()) -> AudioSearch:
    """Files named directly (any ending) plus files with an audio ending under folders: the one folder walk.

    Folders are searched recursively in sorted order (a folder's files, then its sub-folders), following
    symbolic links; a folder reached twice (a link loop, or two links to one folder) is walked once, by real
    path. Hidden files and folders (``.name``) are skipped, and so are the folders in ``skip`` (a run's own
    ``<out>.parts``). A folder that cannot be listed is not skipped in silence: it lands in ``failures``.
    A file named twice (relative and absolute, or through a link) is listed once, first spelling kept.
    Raises FileNotFoundError for a path that does not exist.

    URLs (``s3://bucket/prefix/``, ``gs://...``) are walked by the same rules through one listing of the prefix
    (:func:`avex_hub.storage.listing.list_location`); an ``https://`` URL is a file. A store that cannot be used
    (unreachable, credentials refused) raises :class:`avex_hub.storage.locations.StorageAccessError`.
    """
    endings = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    skip = [local_path(os.fspath(s)) for s in skip]
    skipped = {os.path.realpath(s) for s in skip if not is_url(s)}
    found: dict[str, str] = {}  # real path -> path as found
    failures: dict[str, str] = {}
    walked: set[str] = set()
    hidden = 0

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in walked or real in skipped:
            return
        walked.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            failures[folder] = f"{type(error).__name__}: cannot list this folder ({error.strerror or error})"
            return
        nonlocal hidden
        hidden += sum(e.name.startswith(".") and (_is_dir(e) or e.name.lower().endswith(endings)) for e in entries)
        entries = [e for e in entries if not e.name.startswith(".")]
        folders = [e.path for e in entries if _is_dir(e)]
        for e in entries:
            if e.path not in folders and e.name.lower().endswith(endings):
                found.setdefault(os.path.realpath(e.path), e.path)
        for sub in folders:
            walk(sub)

    for raw in paths:
        path = local_path(os.fspath(raw))  # a file:// URL is a local path
        if is_url(path):  # a prefix of an object store, walked by the same rules (or an object, or an https:// file)
            listed = list_location(path, endings=endings, skip=tuple(s for s in skip if is_url(s)))
            for url in listed.files:
                found.setdefault(url, url)
            failures.update(listed.failures)
            hidden += listed.hidden
        elif os.path.isdir(path):
            walk(path)
        elif os.path.lexists(path):  # any file named directly; a dangling link fails (reported) when read
            found.setdefault(os.path.realpath(path), path)
        else:
            raise FileNotFoundError(f"input not found: {path} (working directory {os.getcwd()}); "
                                    "pass audio files or folders holding them")
    return AudioSearch(list(found.values()), failures, hidden)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links
    except OSError:
        return False
