"""Ray Data as the engine (--engine ray) on the session's one local Ray cluster (tests/conftest.py ``ray_cluster``,
``ray.init(num_cpus=2)``): the single-machine CLI's rows, failures as rows of the failure list, reruns that skip what
was written, object storage, another runtime, the library's Dataset, and one-line errors for a cluster that is not
there."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avex_hub.cli import EXIT_PARTIAL, EXIT_USAGE, main
from conftest import FIXTURE, REPO_ROOT, tones

pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
QUIET = ["--checkpoint", str(FIXTURE), "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Files of several rates, lengths and channel counts (one shorter than a window), and a corrupt one."""
    root = tmp_path_factory.mktemp("ray_inputs")
    sf.write(root / "a_long.wav", tones(25, 16000, seed=1), 16000, subtype="FLOAT")
    sf.write(root / "b_stereo.flac", tones(12, 44100, channels=2, seed=2), 44100)
    sf.write(root / "c_short.wav", tones(3, 22050, seed=3), 22050)
    (root / "d_corrupt.wav").write_bytes(np.random.default_rng(4).bytes(4096))
    return root


def _csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _same_csv(a: list[dict], b: list[dict]) -> None:
    """Every column equal, the scores to 1e-5."""
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k != "score"} == {k: v for k, v in y.items() if k != "score"}
        assert abs(float(x["score"]) - float(y["score"])) <= 1e-5


def _free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def test_classify_on_ray_gives_the_single_machine_rows(ray_cluster, recordings, tiny_model, tmp_path, capsys):
    """Top-k and --species (every asked score kept in the actors), all channels, a corrupt file: the same CSV, the
    same failure row, exit code PARTIAL."""
    species = ",".join(tiny_model.labels[i] for i in (3, 0))
    for extra in ([], ["--species", species]):
        local, remote = tmp_path / f"local{len(extra)}.csv", tmp_path / f"ray{len(extra)}.csv"
        common = ["--channels", "all", *extra, *QUIET]
        assert main(["classify", str(recordings), "--out", str(local), *common]) == EXIT_PARTIAL
        assert main(["classify", str(recordings), "--out", str(remote), "--engine", "ray", *common]) == EXIT_PARTIAL
        _same_csv(_csv(local), _csv(remote))
        failed = _csv(f"{remote}.failures.csv")
        assert [Path(f["path"]).name for f in failed] == ["d_corrupt.wav"]
        assert failed == _csv(f"{local}.failures.csv")
    assert {r["label"] for r in _csv(remote)} == set(species.split(","))
    assert "wrote" in capsys.readouterr().err


def test_embed_on_ray_from_object_storage_and_a_rerun_skips_what_was_written(ray_cluster, s3_store, recordings,
                                                                              tmp_path, capsys):
    """Decoding tasks read s3:// with the run's storage options; embeddings equal the local run's to 1e-5."""
    import pyarrow.parquet as pq

    s3_store.upload(recordings, "archive", "ray")
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["embed", str(recordings), "--out", str(local), "--layers", "2,-1", *QUIET]) == EXIT_PARTIAL
    args = ["embed", "s3://archive/ray/", "--out", str(remote), "--layers", "2,-1", "--engine", "ray",
            "--storage-options", json.dumps(s3_store.options()), *QUIET]
    assert main(args) == EXIT_PARTIAL
    a, b = pq.read_table(local).to_pylist(), pq.read_table(remote).to_pylist()
    assert [r["file"].replace(str(recordings), "s3://archive/ray") for r in a] == [r["file"] for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in ("file", "embedding")} == \
            {k: v for k, v in y.items() if k not in ("file", "embedding")}
        np.testing.assert_allclose(x["embedding"], y["embedding"], atol=1e-5)
    assert [f["path"] for f in _csv(f"{remote}.failures.csv")] == ["s3://archive/ray/d_corrupt.wav"]
    parts = sorted(Path(f"{remote}.parts").iterdir())
    stamps = [p.stat().st_mtime_ns for p in parts]
    capsys.readouterr()
    assert main(args) == EXIT_PARTIAL  # the three good files are parts already: only the corrupt one is tried
    assert "files skipped (done by an earlier run): 3, failed: 1" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in sorted(Path(f"{remote}.parts").iterdir())] == stamps
    assert pq.read_table(remote).to_pylist() == b


def test_onnxruntime_on_ray_gives_its_single_machine_rows(ray_cluster, ray_graph_cache, recordings, tmp_path,
                                                         monkeypatch):
    """--runtime onnxruntime: each actor makes the same WindowModel call as one machine (runtimes.window_model on the
    graph the driver exported into the cache the actors read)."""
    pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    monkeypatch.setenv("AVEX_HUB_CACHE", str(ray_graph_cache))
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    common = ["--runtime", "onnxruntime", "--threads", "1", *QUIET]
    assert main(["classify", str(recordings), "--out", str(local), *common]) == EXIT_PARTIAL
    assert main(["classify", str(recordings), "--out", str(remote), "--engine", "ray", *common]) == EXIT_PARTIAL
    _same_csv(_csv(local), _csv(remote))
    assert json.loads(Path(f"{remote}.settings.json").read_text())["runtime"] == "onnxruntime"


def test_the_library_gives_a_ray_dataset_with_an_end_row_per_file(ray_cluster, recordings, tiny_model):
    from avex_hub.audio.folders import find_audio
    from avex_hub.embed.inference import inference_settings, iter_file_results
    from avex_hub.integrations.ray_data import RESULT_COLUMNS, result_dataset

    files = find_audio([recordings]).files
    settings = inference_settings(tiny_model, "classify", top_k=3)
    dataset = result_dataset(files, tiny_model, settings)
    assert isinstance(dataset, ray_cluster.data.Dataset)
    rows = dataset.take_all()
    assert set(RESULT_COLUMNS) | {"top_scores", "top_indices"} == set(rows[0])
    ends = {r["path"]: r for r in rows if r["end"]}
    assert sorted(ends) == sorted(files)
    assert ends[str(recordings / "d_corrupt.wav")]["error"].startswith("AudioDecodeError")
    local = {r.path: r for r in iter_file_results(tiny_model, files, settings, num_workers=0, progress=False)}
    for path in files:
        windows = sorted((r for r in rows if r["path"] == path and not r["end"]), key=lambda r: r["index"])
        assert ends[path]["windows"] == len(windows) == local[path].num_windows
        if windows:
            np.testing.assert_allclose(np.stack([w["top_scores"] for w in windows]),
                                       local[path].arrays["top_scores"], atol=1e-5)
            assert np.array_equal(np.stack([w["top_indices"] for w in windows]), local[path].arrays["top_indices"])
            assert [w["start_s"] for w in windows] == local[path].arrays["start_s"].tolist()


def test_a_cluster_that_is_not_there_is_one_line_before_any_work(recordings, tmp_path, capsys, monkeypatch):
    """--address (or RAY_ADDRESS) is checked before it is used, even in a process that has joined a cluster; the
    package never starts one there. --address without --engine ray is refused too."""
    port = _free_port()
    out = tmp_path / "x.csv"
    assert main(["classify", str(recordings), "--out", str(out), "--engine", "ray", "--address",
                 f"127.0.0.1:{port}", *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in err and "ray start --head" in err
    assert not Path(f"{out}.parts").exists()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    assert main(["classify", str(recordings), "--out", str(out), "--engine", "ray", *QUIET]) == EXIT_USAGE
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert main(["classify", str(recordings), "--out", str(out), "--address", "127.0.0.1:1", *QUIET]) == EXIT_USAGE
    assert "--address 127.0.0.1:1 belongs to --engine ray" in capsys.readouterr().err


def test_without_ray_the_engine_is_one_line_naming_the_extra(recordings, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["classify", str(recordings), "--out", str(tmp_path / "x.csv"), "--engine", "ray",
                 *QUIET]) == EXIT_USAGE
    assert "pip install 'avex-hub[ray]'" in capsys.readouterr().err


def test_the_cluster_yaml_is_a_valid_ray_cluster():
    """deploy/ray-cluster-aws.yaml against Ray's own cluster schema, with the defaults `ray up` fills in (no cloud
    is reached); a misspelt field is caught the same way."""
    import yaml
    from jsonschema.exceptions import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO_ROOT / "deploy" / "ray-cluster-aws.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "aws" and config["head_node_type"] == "head"
    assert any("avex-hub[cli,cloud,ray]" in command for command in config["setup_commands"])
    worker = config["available_node_types"]["gpu_worker"]
    worker["node_confg"] = worker.pop("node_config")
    with pytest.raises(ValidationError):
        validate_config(prepare_config(config))
