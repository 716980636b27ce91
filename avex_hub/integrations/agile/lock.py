"""One writer at a time: the lock file ``<archive>/avex-hub.lock``.

Every change to an archive (indexing, labels, imports, pruning, schema upgrades, repairs) happens while its
writer holds an exclusive ``flock`` on this file, and the file names the holder (process, host, command, start
time) so that a second writer can say who is writing and for how long. Readers (search, detect, export) never take
it: SQLite's write-ahead log gives them the last committed state, and the vector index file is replaced by a
rename, never rewritten in place.

The operating system drops a process's ``flock`` when the process ends, however it ends; the file's text stays.
A writer that gets the lock and finds the text of a process that is gone (same host) takes it over and says so.
Text naming another host is not taken over: whether that process is alive cannot be checked from here.

File locks are advisory and unreliable on network file systems (NFS, SMB, sshfs; some do not lock at all): keep an
archive that several machines write on a local disk, or make sure only one machine writes at a time.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: a byte-range lock instead
    fcntl = None
    import msvcrt

LOCK_NAME = "avex-hub.lock"


class ArchiveLockedError(RuntimeError):
    """Another process is writing the archive; ``holder`` is what its lock file says (may be empty)."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def describe(holder: dict) -> str:
    """``process 123 on host (avex-hub index), started 5 min ago`` from a lock file's text."""
    if not holder:
        return "another process (its lock file names no holder yet)"
    return (f"process {holder.get('pid')} on {holder.get('host')} ({holder.get('command', '?')}), started "
            f"{_age(time.time() - float(holder.get('started', time.time())))} ago")


class WriterLock:
    """``with WriterLock(folder, "avex-hub index"):`` holds the archive's writer lock, or raises
    :class:`ArchiveLockedError` at once naming the holder. ``took_over`` says whose stale lock was taken over."""

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.command = command
        self.took_over: str | None = None
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = _read(fd)
                raise ArchiveLockedError(f"{self.path.parent} is being written by {describe(holder)}; wait for it "
                                         f"to finish, then run this again", holder)
            previous = _read(fd)
            if previous:
                self._check_previous(previous)
            _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                        "started": time.time()})
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _check_previous(self, previous: dict) -> None:
        """The text of a holder that no longer holds the lock: taken over when that process is gone."""
        same_host = previous.get("host") == socket.gethostname()
        pid = int(previous.get("pid", -1))
        if not same_host:
            raise ArchiveLockedError(
                f"{self.path.parent} is locked by {describe(previous)}, another machine; if that run has ended, "
                f"delete {self.path} and run this again", previous)
        if pid != os.getpid() and _alive(pid):
            # It no longer holds the flock, so it is not writing: a reused process id, or a holder that closed the
            # file without clearing it. Either way the archive is free.
            self.took_over = f"took over the lock of {describe(previous)}, which no longer holds it"
        else:
            self.took_over = f"took over the lock left by {describe(previous)}, which is gone"

    def __exit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no holder named: the next writer has nothing to take over
        finally:
            _unlock(fd)
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    try:
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (UnicodeDecodeError, ValueError):  # not ours (or cut short): it names no holder
        return {}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode("utf-8"))
    os.fsync(fd)
