"""One file fingerprint (path, size, mtime_ns) behind the CLI's shard names and the extraction caches' dataset
digest, with the hashed bytes pinned: the hex digests below were computed by the code before the two were merged
into ``file_fingerprint``, so shards and caches written by earlier versions keep their keys. A change that fails
here would make every existing shard and cache be recomputed: make such a change on purpose, and say so."""

from __future__ import annotations

import hashlib
import json
import os
import wave

import pytest

from avex_hub.audio.datasets import AudioDataset
from avex_hub.cli import shard_name
from avex_hub.embed.extract import ClipList, dataset_fingerprint
from avex_hub.embed.outputs import file_fingerprint

A_MTIME_NS = 1_700_000_000_000_000_000
B_MTIME_NS = 1_700_000_001_500_000_000


def _silent_wav(path: str, frames: int, rate: int, mtime_ns: int) -> None:
    """A 16-bit mono WAV of silence written by the standard library (a 44-byte header: the size is fixed)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with wave.open(path, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(b"\0\0" * frames)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def known_files(tmp_path, monkeypatch):
    """``a.wav`` (3244 bytes) and ``sub/b.wav`` (1644 bytes) with fixed modification times, in the working folder
    (relative paths, so that a dataset's digest does not depend on where the test runs)."""
    monkeypatch.chdir(tmp_path)
    _silent_wav("a.wav", 1600, 16000, A_MTIME_NS)
    _silent_wav("sub/b.wav", 800, 8000, B_MTIME_NS)
    return tmp_path


def test_file_fingerprint_is_path_size_and_mtime(known_files):
    assert file_fingerprint("a.wav") == {"path": "a.wav", "size": 3244, "mtime_ns": A_MTIME_NS}
    absolute = known_files / "sub" / "b.wav"
    assert file_fingerprint(absolute) == {"path": str(absolute), "size": 1644, "mtime_ns": B_MTIME_NS}
    assert file_fingerprint("missing.wav") == {"path": "missing.wav", "size": None, "mtime_ns": None}
    os.utime("a.wav", ns=(A_MTIME_NS, A_MTIME_NS + 1))  # touched: a different fingerprint
    assert file_fingerprint("a.wav")["mtime_ns"] == A_MTIME_NS + 1


def test_shard_name_hashes_the_same_bytes_as_before(known_files):
    settings = {"task": "embed", "layers": [12], "avex_hub_version": "0.0"}  # the version is left out of the key
    text = ('{"mtime_ns": 1700000000000000000, "path": %s, "settings": {"layers": [12], "task": "embed"}, '
            '"size": 3244}' % json.dumps(str(known_files / "a.wav")))
    assert shard_name("a.wav", settings) == hashlib.sha256(text.encode()).hexdigest()[:32] + ".npz"
    assert shard_name(str(known_files / "a.wav"), {**settings, "avex_hub_version": "9.9"}) == \
        shard_name("a.wav", settings)
    assert shard_name("a.wav", {**settings, "layers": [11]}) != shard_name("a.wav", settings)


def test_dataset_fingerprint_of_a_clip_list_is_pinned(known_files):
    clips = ClipList(["a.wav", "sub/b.wav", "missing.wav"])
    assert dataset_fingerprint(clips) == "1ca93ee76440bfaca00bea6252a4c08f23dcd1cfa72b65f403e8262384440daa"


def test_dataset_fingerprint_of_an_audio_dataset_is_pinned(known_files):
    dataset = AudioDataset([("a.wav", ["x"], None, None, {}), ("sub/b.wav", ["y"], 0.0, 0.05, {})],
                           clip_s=1.0)
    assert dataset_fingerprint(dataset) == "3505fc826ca2d91666086a9f32eb7ec673fa25a38526eec884d0c542c3d8b2e4"
    os.utime("a.wav", ns=(A_MTIME_NS, A_MTIME_NS + 1))
    assert dataset_fingerprint(dataset) != "3505fc826ca2d91666086a9f32eb7ec673fa25a38526eec884d0c542c3d8b2e4"
