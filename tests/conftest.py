"""Shared fixtures: the beats-tiny checkpoint, its reference outputs, and Hub cache helpers."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "beats-tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AVEX_HUB_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs the Hugging Face Hub; set AVEX_HUB_NETWORK_TESTS=1 to run")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def cases():
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "cases.safetensors"))


@pytest.fixture(scope="session")
def tiny_model():
    from avex_hub import build_model

    return build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE)


@pytest.fixture(scope="module")
def model():
    """A tiny model of the test module's own: probes freeze a backbone in place and training may update it."""
    from avex_hub import build_model

    return build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE)


@pytest.fixture
def tiny_copy(tmp_path) -> Path:
    """A writable copy of the fixture folder."""
    target = tmp_path / "beats-tiny"
    shutil.copytree(FIXTURE, target)
    return target


def populate_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], *, commit: str = "a" * 40) -> Path:
    """Lay files out exactly as huggingface_hub caches them: blobs, a snapshot of symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache for this test (env and huggingface_hub's constants)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
