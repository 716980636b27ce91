"""Splitting an archive's inputs among machines with no coordinator: ``--shard I/N`` takes a fixed 1/N of them.

Each input's *key* is its path relative to the folder or prefix it was found under (``site1/2024-05-01.flac``), or
its name when it was named directly, with ``/`` separators; so machines that mount the archive in different places
(``/mnt/archive``, ``/data/archive``, ``s3://bucket/archive``) give it the same key. When several PATHs are given,
the key of a file under one of them starts with that folder's own name (``siteA/20240501_000000.WAV`` and
``siteB/20240501_000000.WAV``, however the two are mounted); files that would still share a key (two files of one
name named directly, two URLs ending alike, two folders of one name) are refused in one line, never left to one
shard between them. A key goes to shard
``jump_hash(sha256(key), N) + 1`` (Lamping and Veach's jump consistent hash): the same on every machine and every
Python, about N-th of the inputs each, adding inputs moves none of the others, and going from N to N + 1 shards
moves only 1/(N + 1) of them.

A sharded run records what it covered in ``<out>.shard.json`` (:class:`ShardRecord`: the shard, and per input its
key, its position in the whole walk and whether it was written or failed); ``avex-hub merge`` reads these records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

__all__ = ["Shard", "parse_shard", "jump_hash", "input_keys", "ShardRecord", "RECORD_SUFFIX"]

RECORD_SUFFIX = ".shard.json"
_SPEC = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+)\s*$", re.ASCII)
MAX_SHARDS = 1_000_000


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/4`` .. ``4/4``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the input with this key is this shard's."""
        return shard_of(key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> :class:`Shard`; a ValueError in one line for anything but ``1 <= I <= N``."""
    match = _SPEC.match(str(text))
    if not match:
        raise ValueError(f"--shard {text}: expected I/N, this machine's share of N (e.g. --shard 2/4 on the second of "
                         "four machines)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ValueError(f"--shard {text}: the number of shards must be at least 1 (1/1 is the whole archive)")
    if count > MAX_SHARDS:
        raise ValueError(f"--shard {text}: the number of shards must be at most {MAX_SHARDS:,} (one archive's "
                         "machines or jobs); give a smaller N")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: the shard number must be between 1 and the number of shards ({count}); "
                         f"give 1/{count} .. {count}/{count}")
    return Shard(index, count)


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of a 64-bit ``key`` into ``0 .. buckets - 1``."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_of(key: str, count: int) -> int:
    """The shard (1-based) of the input with ``key`` among ``count`` shards."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return jump_hash(int.from_bytes(digest[:8], "big"), count) + 1


def _root_prefix(root: str) -> str:
    """A folder or prefix as the start of the paths found under it (``root/``)."""
    if "://" in root:
        return root.rstrip("/") + "/"
    return os.path.join(root, "")


def _root_name(root: str) -> str:
    """A folder's or prefix's own name (``/mnt/archive/site1/`` -> ``site1``), the same wherever it is mounted."""
    if "://" in root:
        return root.rstrip("/").rsplit("/", 1)[-1]
    return os.path.basename(os.path.abspath(root))


def input_keys(files: list[str], roots: list[str]) -> dict[str, str]:
    """Each file's key: its path relative to the first of ``roots`` (the PATHs given) it lies under, after that
    root's own name when more than one PATH was given (``siteA/x.wav`` and ``siteB/x.wav``), or its name when it was
    named directly (see the module docstring). ValueError in one line when two files would share a key (two files
    of one name named directly, two roots of one name): a shared key would leave one of them to no shard."""
    roots = [os.fspath(r) for r in roots]
    prefixes = [(_root_prefix(r), _root_name(r) + "/" if len(roots) > 1 else "") for r in roots]
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}
    for file in files:
        under = next(((p, name) for p, name in prefixes if file.startswith(p) and len(file) > len(p)), None)
        relative = under[1] + file[len(under[0]):] if under else file.rstrip("/").rsplit("/", 1)[-1]
        key = relative.replace(os.sep, "/") if "://" not in file else relative
        if key in owner:
            raise ValueError(f"{owner[key]} and {file} would share the shard key {key!r} (keys are paths relative to "
                             "the PATHs given, after a folder's own name when several are given); give the folder "
                             "or prefix that holds both as the PATH, or rename one")
        keys[file], owner[key] = key, file
    return keys


@dataclass
class ShardRecord:
    """What one sharded run covered: its shard, and per input key ``[position in the whole walk, path, status]``,
    status ``"written"`` or ``"failed"``."""

    shard: Shard
    inputs: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"shard": str(self.shard), "inputs": self.inputs})  # \udcxx for undecodable names

    @staticmethod
    def from_json(text: str, source: str) -> "ShardRecord":
        try:
            data = json.loads(text)
            return ShardRecord(parse_shard(data["shard"]), {str(k): list(v) for k, v in data["inputs"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{source}: not a shard record written by avex-hub ({type(error).__name__}: {error}); "
                             "run that shard again or leave its output out") from None
