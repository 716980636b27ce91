"""Listing a prefix of an object store as the folder walk lists a folder (``avex_hub.audio`` ``find_audio``).

The same rules: objects with an audio ending, in the walk's order (a "folder's" objects by name, then its
sub-prefixes by name, depth first), hidden entries (a path part starting with ``.``) and the run's own
``<out>.parts`` left out, an object named directly taken whatever its ending. One listing request per 1,000 objects
(the store's flat listing), not one per folder. ``https://`` URLs cannot be listed: each is a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .locations import StorageAccessError, check_store, check_url, filesystem, is_listable, protocol_of, storage_error

__all__ = ["Listing", "list_location"]


@dataclass
class Listing:
    """What :func:`list_location` found under one URL: object URLs in walk order, the prefixes it could not list
    (URL -> why) and how many hidden entries it left out."""

    files: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    hidden: int = 0


def _walk_order(relative: str) -> list[tuple[int, str]]:
    """Sort key of an object below the root: at each level a folder's files (0) come before its sub-folders (1)."""
    *folders, name = relative.split("/")
    return [(1, part) for part in folders] + [(0, name)]


def _unlisted(fs, root: str, url: str, problem: OSError) -> Listing:
    """A URL that may not be listed: the object itself where it may be read (credentials that read objects but may
    not list the bucket), else a failure that says it could be neither read as an object nor listed as a prefix
    (a URL ending in ``/`` is a prefix only)."""
    what = "list this prefix"
    try:
        if not url.endswith("/") and fs.info(root).get("type", "file") == "file":
            return Listing([url])
    except Exception as error:  # noqa: BLE001 - the listing's reason is the one reported
        asked = storage_error(error, url)
        if isinstance(asked, StorageAccessError):
            raise asked from None
        if isinstance(asked, PermissionError):
            what = "read this object or list this prefix"
    return Listing([], {url: f"{type(problem).__name__}: cannot {what} ({problem})"})


def list_location(url: str, *, endings: tuple[str, ...], skip: tuple[str, ...] = ()) -> Listing:
    """The audio objects under ``url`` (a prefix, walked) or ``url`` itself (an object, any ending).

    ``endings``: lower-case file endings (``".wav"``); ``skip``: URLs of prefixes to leave out (a run's own
    ``<out>.parts``). Raises FileNotFoundError when nothing is there, StorageAccessError when the store cannot be
    used (no answer within :data:`~avex_hub.storage.locations.CHECK_TIMEOUT_S`, unreachable, credentials refused,
    options it cannot use); a prefix that may not be listed is returned in ``failures``.
    """
    check_url(url)
    if not is_listable(url):
        if urlsplit(url).path in ("", "/") or url.endswith("/"):
            raise ValueError(f"{url}: an {protocol_of(url)}:// URL names one file, and a web server cannot be listed "
                             "like a folder or a bucket; give the URL of each file instead")
        return Listing([url])
    check_store(url)  # a store that cannot be used: one line now, in bounded time
    fs, root = filesystem(url)
    root = root.rstrip("/")
    try:
        fs.invalidate_cache(root)  # what is there now, not what an earlier listing saw
        found = fs.find(root, withdirs=False, detail=True)
    except Exception as error:  # noqa: BLE001 - every store error is turned into one line below
        problem = storage_error(error, url, listing=True)
        if isinstance(problem, (StorageAccessError, FileNotFoundError)):
            raise problem from None
        return _unlisted(fs, root, url, problem)
    objects = {name: info for name, info in found.items() if info.get("type", "file") == "file"
               and not name.endswith("/")}
    if not objects:
        raise FileNotFoundError(f"input not found: {url} (no object and no prefix of that name); check the bucket "
                                "and the path")
    if list(objects) == [root]:  # the URL names one object
        return Listing([url])
    base = url.rstrip("/")
    skipped = tuple(s.rstrip("/") + "/" for s in skip)
    files, hidden_folders, hidden = [], set(), 0
    for name in objects:
        relative = name[len(root) + 1:] if name.startswith(root + "/") else name
        *folders, leaf = relative.split("/")
        hidden_at = next((i for i, part in enumerate(folders) if part.startswith(".")), None)
        if hidden_at is not None:
            hidden_folders.add("/".join(folders[: hidden_at + 1]))
            continue
        if not leaf.lower().endswith(endings):
            continue
        if leaf.startswith("."):
            hidden += 1
            continue
        if skipped and f"{base}/{relative}".startswith(skipped):
            continue
        files.append(relative)
    files.sort(key=_walk_order)
    return Listing([f"{base}/{relative}" for relative in files], {}, hidden + len(hidden_folders))
