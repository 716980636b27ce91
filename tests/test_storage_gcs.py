"""gs:// against a GCS server started by the tests (gcp-storage-emulator's JSON API, tests/cloud_servers.py), through
gcsfs as a user's run goes: a prefix listed as a folder and classified to the local folder's rows, a long WAV read
in ranges, a missing object named in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avex_hub.audio.folders import AUDIO_EXTENSIONS, find_audio
from avex_hub.cli import EXIT_PARTIAL, EXIT_USAGE, main
from avex_hub.storage import listing, locations, objects
from cloud_servers import gcs_store  # noqa: F401 - the server, one per session (only this module uses it)
from conftest import FIXTURE, tones

pytest.importorskip("gcsfs", reason="the cloud extra: pip install -e '.[cloud]'")
QUIET = ["--checkpoint", str(FIXTURE), "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def site(gcs_store, tmp_path_factory):
    """Recordings locally and at gs://archive/site/: nested folders, a stereo FLAC, a corrupt file, a hidden one and
    a text file (the walk leaves the last two out)."""
    root = tmp_path_factory.mktemp("gcs_site")
    for name, seconds, rate, channels in [("north/a.wav", 12, 16000, 1), ("north/deeper/b.flac", 5, 44100, 2),
                                          ("south/c.wav", 3, 22050, 1), ("south/.hidden.wav", 1, 16000, 1)]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, tones(seconds, rate, channels=channels, seed=len(name)), rate)
    (root / "south" / "d_corrupt.wav").write_bytes(np.random.default_rng(5).bytes(3000))
    (root / "notes.txt").write_text("not audio")
    gcs_store.upload(root, "archive", "site")
    return root


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_gs_prefix_lists_and_classifies_as_the_local_folder(gcs_store, site, tmp_path):
    local = find_audio([site])
    with locations.using_options(gcs_store.options()):
        for given in ("gs://archive/site", "gs://archive/site/"):
            found = listing.list_location(given, endings=AUDIO_EXTENSIONS)
            assert [f.removeprefix("gs://archive/site/") for f in found.files] == \
                [Path(f).relative_to(site).as_posix() for f in local.files]
            assert found.hidden == local.hidden == 1 and found.failures == {}
    assert len(local.files) == 4  # a, b (in deeper/), c and the corrupt file

    here, there = tmp_path / "local.csv", tmp_path / "gcs.csv"
    assert main(["classify", str(site), "--out", str(here), *QUIET]) == EXIT_PARTIAL  # the corrupt file
    assert main(["classify", "gs://archive/site/", "--out", str(there), "--storage-options",
                 json.dumps(gcs_store.options()), *QUIET]) == EXIT_PARTIAL
    a, b = _rows(here), _rows(there)
    assert len(a) == len(b) > 0
    assert [r["file"] for r in b] == [r["file"].replace(str(site), "gs://archive/site") for r in a]
    for x, y in zip(a, b):
        assert {k: x[k] for k in x if k not in ("file", "score")} == {k: y[k] for k in y if k not in ("file", "score")}
        assert abs(float(x["score"]) - float(y["score"])) <= 1e-6
    failures = _rows(f"{there}.failures.csv")
    assert [r["path"] for r in failures] == ["gs://archive/site/south/d_corrupt.wav"]


def test_a_long_gs_object_is_read_in_ranges(gcs_store, tmp_path):
    """A 10-minute WAV (19 MB) streamed through libsndfile: every download is a range of at most one block, and the
    object is fetched about once, never whole; its identity is the store's ETag and generation."""
    rate, seconds = 16000, 600
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, rate * seconds).astype(np.float32)
    sf.write(tmp_path / "long.wav", audio, rate, subtype="PCM_16")
    size = (tmp_path / "long.wav").stat().st_size
    url = "gs://archive/long/long.wav"
    gcs_store.fs.put_file(str(tmp_path / "long.wav"), url)
    gcs_store.ranges.clear()
    with locations.using_options(gcs_store.options()):
        with objects.open_binary(url) as reader, sf.SoundFile(reader) as f:
            decoded = np.concatenate([b[:, 0] for b in f.blocks(rate * 30, dtype="float32", always_2d=True)])
            objects.raise_source_error(reader)
        ident = objects.identity(url)
    np.testing.assert_array_equal(decoded, sf.read(tmp_path / "long.wav", dtype="float32")[0])
    ranges = list(gcs_store.ranges)
    assert ranges and all(spec is not None and spec.startswith("bytes=") for spec in ranges)
    lengths = [int(b) - int(a) + 1 for a, b in (spec[6:].split("-") for spec in ranges)]
    assert max(lengths) <= objects.BLOCK_SIZE + 2**16  # one read-ahead block plus the read that asked for it
    assert size <= sum(lengths) <= size + 2 * objects.BLOCK_SIZE
    info = gcs_store.fs.info(url)
    assert ident == {"path": url, "size": size, "etag": info["etag"], "version_id": info["generation"]}


def test_a_missing_gs_object_is_one_line(gcs_store, site, tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["classify", "gs://archive/site/nothing-here.wav", "--out", str(out), "--storage-options",
                 json.dumps(gcs_store.options()), *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("avex-hub: error: ")
    assert "input not found: gs://archive/site/nothing-here.wav" in err and not out.exists()
    with locations.using_options(gcs_store.options()), pytest.raises(FileNotFoundError, match="gs://archive/gone.wav"):
        with objects.open_binary("gs://archive/gone.wav") as reader:
            reader.read(10)
