"""Objects in a store: ranged reading, what identifies one, and writing outputs whole.

* :func:`open_binary` opens a local path or a URL for reading. A URL is read in ranges of ``BLOCK_SIZE`` as the
  reader moves (fsspec's read-ahead cache: one block in memory, never the whole object), so a decoder streams a
  long recording from the store as it streams a local file. libsndfile reads every format it knows through such a
  file object, so no decoder here needs a local copy.
* A store error inside a decoder's read (the object deleted during the run, the connection lost) cannot pass
  through libsndfile's C callbacks: :class:`RangeReader` keeps it and ends the stream, and the decoder asks
  :func:`raise_source_error` after each read, so the file fails with the store's reason instead of looking short.
* :func:`identity` says what identifies an object for resuming: its size and ETag or version id, else its
  Last-Modified time; with none of these it is never taken as unchanged. (A local file is identified by path, size
  and modification time elsewhere, ``avex_hub.embed.outputs.file_fingerprint``.)
* :func:`put_file` uploads a finished local file in one piece: the object appears whole or not at all, which is
  what the atomic local rename gives for files.
"""

from __future__ import annotations

import io
import os
import secrets

from .locations import check_url, filesystem, is_url, storage_error

__all__ = ["BLOCK_SIZE", "RangeReader", "open_binary", "raise_source_error", "object_size", "identity", "exists",
           "put_file", "get_file", "remove"]

BLOCK_SIZE = 4 * 2**20  # bytes per ranged request; also the most a reader holds in memory


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of one object, read in ranges; a store error is kept in :attr:`error` (and the
    read returns no bytes) instead of being raised inside a C callback."""

    def __init__(self, url: str, block_size: int = BLOCK_SIZE) -> None:
        super().__init__()
        self.url, self.error = url, None
        fs, path = filesystem(check_url(url))
        try:
            self._file = fs.open(path, "rb", block_size=block_size, cache_type="readahead")
        except Exception as error:  # noqa: BLE001 - translated into one line naming the URL
            raise storage_error(error, url) from None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.error is not None:
            return 0
        try:
            data = self._file.read(len(buffer))
        except Exception as error:  # noqa: BLE001 - kept for raise_source_error, see the class docstring
            self.error = storage_error(error, self.url)
            return 0
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def open_binary(path, block_size: int = BLOCK_SIZE):
    """A binary reader of a local path (``open(path, "rb")``) or of a URL (a :class:`RangeReader` fetching
    ``block_size`` bytes a request: a small one for reading a header only)."""
    return RangeReader(path, block_size) if is_url(path) else open(path, "rb")


def raise_source_error(reader) -> None:
    """Raise the store error a :class:`RangeReader` kept, if any (a local file object has none)."""
    error = getattr(reader, "error", None)
    if error is not None:
        raise error


def _info(url: str) -> dict:
    fs, path = filesystem(check_url(url))
    try:
        info = fs.info(path)
    except Exception as error:  # noqa: BLE001 - translated into one line naming the URL
        raise storage_error(error, url) from None
    if info.get("type", "file") != "file":
        raise IsADirectoryError(f"{url}: expected an object, found a prefix (a folder)")
    return info


def object_size(url: str) -> int | None:
    """The object's size in bytes (None when the server does not say); FileNotFoundError when it is not there."""
    size = _info(url).get("size")
    return None if size is None else int(size)


def identity(url: str) -> dict:
    """``{"path", "size", "etag", "version_id"}`` of an object: what tells that it changed without reading it
    (the ETag, or the version id of a versioned bucket, and the size; None where the store gives none).

    A server that sends neither (a plain web server) is identified by its ``Last-Modified`` time too, under
    ``"modified"``; with no such time either, nothing tells a change, and ``"unidentified"`` holds a value drawn
    afresh each time: such an object is never taken as unchanged (a rerun computes it again)."""
    info = _info(url)
    lowered = {str(k).lower(): v for k, v in info.items()}
    etag = lowered.get("etag") or lowered.get("md5hash") or None
    version = lowered.get("versionid") or lowered.get("generation") or None
    found = {"path": url, "size": info.get("size"), "etag": None if etag is None else str(etag).strip('"'),
             "version_id": None if version is None else str(version)}
    if etag is None and version is None:
        modified = lowered.get("last-modified") or lowered.get("lastmodified") or lowered.get("updated")
        if modified:
            found["modified"] = str(modified)
        else:
            found["unidentified"] = secrets.token_hex(16)
    return found


def exists(url: str) -> bool:
    """Whether an object is at ``url`` (a store that cannot be reached or read is an error, not a no)."""
    try:
        _info(url)
    except FileNotFoundError:
        return False
    return True


def put_file(local: str | os.PathLike, url: str) -> None:
    """Upload the finished file ``local`` to ``url`` in one piece (the object appears whole or not at all)."""
    fs, path = filesystem(check_url(url))
    try:
        fs.put_file(os.fspath(local), path)
    except Exception as error:  # noqa: BLE001 - translated into one line naming the URL
        raise storage_error(error, url, writing=True) from None


def get_file(url: str, local: str | os.PathLike) -> None:
    """Download the object at ``url`` to the local file ``local``."""
    fs, path = filesystem(check_url(url))
    try:
        fs.get_file(path, os.fspath(local))
    except Exception as error:  # noqa: BLE001 - translated into one line naming the URL
        raise storage_error(error, url) from None


def remove(url: str) -> None:
    """Delete the object at ``url`` if it is there."""
    fs, path = filesystem(check_url(url))
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as error:  # noqa: BLE001 - translated into one line naming the URL
        raise storage_error(error, url, writing=True) from None
