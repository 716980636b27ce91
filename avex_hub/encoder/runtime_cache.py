"""The user cache of exported graphs: made once per weights and settings, verified on every load.

An entry is ``<key>.onnx`` (the graph, its identity in the ONNX metadata) and ``<key>.json`` (the identity, the
file's SHA-256 and how long the export took). The key is the SHA-256 of the identity: the digest of the model's
actual tensors (so two weights never share an entry, even a model changed in memory after loading), its
architecture, preprocessing, the graph's outputs, layers and pooling, the file's form (fp32 or int8), the opset and
the versions of avex-hub, torch and onnx that wrote it. On every load the ``.json``, the file's SHA-256 and the
metadata inside the file must agree with the identity asked for; an entry that does not (a copy cut short, a file
changed by hand) is rebuilt, with a line saying so. Files are written to temporary names and moved into place
(the ``.json`` last), under a lock per key, so a second process asking for the same entry waits and then uses it,
and a process killed mid-export leaves no entry behind.

The folder: ``AVEX_HUB_CACHE`` when set, else the platform's user cache (``$XDG_CACHE_HOME`` or ``~/.cache`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows) under ``avex-hub/runtimes``. Entries are a few
hundred MB for the published model (int8 a quarter of that); delete the folder to reclaim them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

__all__ = ["CACHE_ENV", "cache_dir", "tensors_digest", "entry_key", "cached_graph"]

CACHE_ENV = "AVEX_HUB_CACHE"


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$AVEX_HUB_CACHE/runtimes`` or the platform's user cache (module doc)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "runtimes"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "avex-hub" / "runtimes"


def tensors_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every entry of ``module``'s state dict (name, dtype, shape, bytes), in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def entry_key(identity: dict) -> str:
    """The file name of ``identity``'s entry: the first 32 hex digits of its canonical JSON's SHA-256."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), held for the block; released if the process dies."""
    with open(path, "a+b") as handle:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s; keep waiting for the other export
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _problem(onnx_path: Path, json_path: Path, identity: dict, read_metadata: Callable[[Path], dict]) -> str | None:
    """Why the entry cannot be used (None: it can)."""
    if not json_path.is_file() or not onnx_path.is_file():
        return "missing"
    try:
        stored = json.loads(json_path.read_text())
    except (OSError, ValueError) as error:
        return f"its record is unreadable ({error})"
    if not isinstance(stored, dict) or stored.get("identity") != identity:
        return "its record names other weights or settings"
    if _file_sha256(onnx_path) != stored.get("file_sha256"):
        return "the graph file's SHA-256 differs from the one recorded when it was written"
    try:
        inside = read_metadata(onnx_path)
    except (OSError, ValueError) as error:
        return f"the graph file is unreadable ({error})"
    if inside.get("identity") != identity:
        return "the graph file's own metadata names other weights or settings"
    return None


def cached_graph(identity: dict, build: Callable[[Path], None], read_metadata: Callable[[Path], dict], *,
                 what: str, folder: str | os.PathLike | None = None,
                 notify: Callable[[str], None] | None = None) -> Path:
    """The verified file of ``identity``: an existing entry, or one made now by ``build(tmp_path)`` (which must
    write the graph with ``{"identity": identity, ...}`` as its metadata). ``what`` names it in the lines given to
    ``notify`` (default: stderr) when it is exported or rebuilt. ``folder``: default :func:`cache_dir`."""
    notify = notify or (lambda line: print(f"avex-hub: {line}", file=sys.stderr, flush=True))
    root = Path(folder) if folder is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = entry_key(identity)
    onnx_path, json_path = root / f"{key}.onnx", root / f"{key}.json"
    with _locked(root / f"{key}.lock"):
        problem = _problem(onnx_path, json_path, identity, read_metadata)
        if problem is None:
            return onnx_path
        if problem != "missing":
            notify(f"the cached graph {onnx_path} cannot be used ({problem}); exporting it again")
            json_path.unlink(missing_ok=True)
        for stale in root.glob(f".{key}.*.tmp*"):  # left by an export that was killed (we hold the lock)
            stale.unlink(missing_ok=True)
        notify(f"exporting {what} to {onnx_path} (once for these weights and settings)...")
        started = time.perf_counter()
        tag = f"{os.getpid()}.{secrets.token_hex(4)}"
        tmp_onnx, tmp_json = root / f".{key}.{tag}.tmp.onnx", root / f".{key}.{tag}.tmp.json"
        try:
            build(tmp_onnx)
            seconds = time.perf_counter() - started
            record = {"identity": identity, "file_sha256": _file_sha256(tmp_onnx), "export_seconds": round(seconds, 2)}
            tmp_json.write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(tmp_onnx, onnx_path)
            os.replace(tmp_json, json_path)  # the record last: an entry without it is never used
        finally:
            tmp_onnx.unlink(missing_ok=True)
            tmp_json.unlink(missing_ok=True)
        notify(f"exported {what} in {seconds:.1f} s")
        return onnx_path
