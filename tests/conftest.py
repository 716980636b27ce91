"""Shared fixtures: the beats-tiny checkpoint, its reference outputs, Hub cache helpers and test audio."""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "beats-tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AVEX_HUB_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs the Hugging Face Hub; set AVEX_HUB_NETWORK_TESTS=1 to run")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


def tones(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated tones below 6 kHz (no energy lost by resampling to 16 kHz), [samples, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    out = np.zeros((t.size, channels), np.float32)
    for c in range(channels):
        for f in rng.uniform(200, 6000, size=4):
            envelope = 1 + np.sin(2 * np.pi * rng.uniform(0.1, 2) * t)
            out[:, c] += 0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) * envelope
    return out


def blobs(n: int, k: int, dim: int, seed: int, *, centers: torch.Tensor | None = None, center_seed: int = 123,
          spread: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs (unit variance) around ``k`` random centers: separable, labels 0..k-1 equally often.

    Returns ``(x [n, dim], y [n])``; the centers come from ``center_seed`` (scaled by ``spread``) unless given.
    """
    if centers is None:
        centers = torch.randn(k, dim, generator=torch.Generator().manual_seed(center_seed)) * spread
    y = torch.arange(n) % k
    return centers[y] + torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), y


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small-tensor work (item loading as in a DataLoader worker, the tiny model) gains nothing from intra-op
    threads, and on a busy machine the thread hand-off costs ~100x; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def hub_address(name: str, data: bytes) -> str:
    """The blob name the Hub gives a file: SHA-256 for LFS files (weights), the git blob SHA-1 otherwise."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def populate_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], *, commit: str = "a" * 40) -> Path:
    """Lay files out exactly as huggingface_hub caches them: blobs (named by content address, see
    ``hub_address``), a snapshot of symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hub_address(name, data)
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


@pytest.fixture
def tiny_entry(monkeypatch, tiny_dir):
    """The published esp_aves2_sl_beats_all entry pointed at the tiny checkpoint's digest and architecture."""
    import json
    from dataclasses import replace

    from avex_hub.encoder.beats import BEATsConfig
    from avex_hub.hub import weights as weights_module
    from avex_hub.hub.loading import sha256_file

    entry = weights_module.WEIGHTS["esp_aves2_sl_beats_all"]
    config = BEATsConfig.from_dict(json.loads((tiny_dir / "config.json").read_text()))
    patched = replace(entry, sha256=sha256_file(tiny_dir / "model.safetensors"), config=config)
    monkeypatch.setitem(weights_module.WEIGHTS, entry.name, patched)
    return patched


# The servers the storage tests start, one per session (moto's S3 and a ranged HTTP server).
from cloud_servers import http_store, offline_cloud_env, s3_store  # noqa: E402,F401


@pytest.fixture(scope="session")
def ray_graph_cache(tmp_path_factory) -> Path:
    """The runtime-graph cache (AVEX_HUB_CACHE) of the session's Ray workers; a test that exports a graph on the
    driver sets the same (monkeypatch), so the workers find it there."""
    return tmp_path_factory.mktemp("ray_graphs")


@pytest.fixture(scope="session")
def ray_cluster(ray_graph_cache, offline_cloud_env):
    """One local Ray cluster for the whole session (tests/test_ray.py): 2 CPUs on 127.0.0.1, no dashboard, a small
    object store, no usage report, workers with :func:`ray_graph_cache`. Shut down at the end. Skipped, with the
    reason, without the ray extra."""
    ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    before = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # read as the cluster starts
    try:  # loopback only, not the machine's address
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False,
                 configure_logging=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"AVEX_HUB_CACHE": str(ray_graph_cache)}})
    finally:
        if before is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED")
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = before
    import ray.data

    with warnings.catch_warnings():  # Ray Data's settings object warns about its own deprecated fields as it is
        warnings.simplefilter("ignore", DeprecationWarning)  # made (once a process); none is ours to change
        ray.data.DataContext.get_current()
    yield ray
    ray.shutdown()
