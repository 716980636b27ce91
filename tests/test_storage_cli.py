"""Recordings and outputs in object storage through the command line and the library, against moto's S3 server
(tests/cloud_servers.py): the rows of a local run, outputs written to the store and resumed from it, credentials
never written or printed, one-line errors for a store that cannot be used."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avex_hub.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from avex_hub.storage.locations import using_options
from conftest import FIXTURE, tones

pytest.importorskip("s3fs", reason="the cloud extra: pip install -e '.[cloud]'")
QUIET = ["--checkpoint", str(FIXTURE), "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def site(s3_store, tmp_path_factory):
    """Recordings locally and at s3://archive/cli/: two folders, a stereo file, a corrupt one, a hidden one."""
    root = tmp_path_factory.mktemp("cli_site")
    (root / "north").mkdir()
    (root / "south").mkdir()
    sf.write(root / "north" / "a.wav", tones(14, 16000, seed=11), 16000, subtype="FLOAT")
    sf.write(root / "north" / "b.flac", tones(6, 44100, channels=2, seed=12), 44100)
    sf.write(root / "south" / "c.ogg", tones(4, 48000, seed=13), 48000, format="OGG", subtype="VORBIS")
    (root / "south" / "d_corrupt.wav").write_bytes(np.random.default_rng(14).bytes(3000))
    sf.write(root / "south" / ".e_hidden.wav", tones(2, 16000, seed=15), 16000)
    s3_store.upload(root, "archive", "cli")
    return root


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _options(s3_store) -> list[str]:
    return ["--storage-options", json.dumps(s3_store.options())]


def test_a_bucket_prefix_classifies_as_the_local_folder_and_the_output_goes_to_the_store(s3_store, site, tmp_path,
                                                                                          capsys):
    local = tmp_path / "local.csv"
    assert main(["classify", str(site), "--out", str(local), *QUIET]) == EXIT_PARTIAL
    out = "s3://outputs/run1/species.csv"
    assert main(["classify", "s3://archive/cli/", "--out", out, *_options(s3_store), *QUIET]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert f"uploaded {out}" in err and f"to {out};" in err and f"(listed in {out}.failures.csv)" in err
    assert "avex-hub-out-" not in err  # the local copy, deleted when the run ends, is never named
    keys = s3_store.keys("outputs", "run1/")
    assert {"run1/species.csv", "run1/species.csv.settings.json", "run1/species.csv.failures.csv"} <= set(keys)
    parts = [k for k in keys if k.startswith("run1/species.csv.parts/")]
    assert len(parts) == 3 and not any(".avex-hub-write-test" in k for k in keys)  # a part per good input
    remote = list(csv.DictReader(io.StringIO(
        s3_store.s3.get_object(Bucket="outputs", Key="run1/species.csv")["Body"].read().decode())))
    assert [r["file"] for r in remote] == [r["file"].replace(str(site), "s3://archive/cli") for r in _rows(local)]
    for a, b in zip(_rows(local), remote):
        assert {k: a[k] for k in a if k not in ("file", "score")} == {k: b[k] for k in b if k not in ("file", "score")}
        assert abs(float(a["score"]) - float(b["score"])) <= 1e-6
    failures = s3_store.s3.get_object(Bucket="outputs", Key="run1/species.csv.failures.csv")["Body"].read().decode()
    assert "s3://archive/cli/south/d_corrupt.wav" in failures and "AudioDecodeError" in failures

    # a rerun on another machine (a fresh local folder) takes the three parts from the store and skips their inputs
    assert main(["classify", "s3://archive/cli/", "--out", out, *_options(s3_store), *QUIET]) == EXIT_PARTIAL
    assert "files skipped (done by an earlier run): 3" in capsys.readouterr().err
    # nothing secret in anything written or printed
    secret = s3_store.admin[1]
    for key in s3_store.keys("outputs", "run1/"):
        assert secret.encode() not in s3_store.s3.get_object(Bucket="outputs", Key=key)["Body"].read()
    assert secret not in err


def test_a_changed_object_is_recomputed(s3_store, site, tmp_path, capsys):
    import pyarrow.parquet as pq

    for name in ("a.wav", "b.flac"):
        s3_store.s3.upload_file(str(site / "north" / name), "archive", f"changing/{name}")
    out = str(tmp_path / "e.parquet")
    args = ["embed", "s3://archive/changing/", "--out", out, *_options(s3_store), *QUIET]
    assert main(args) == EXIT_OK
    sf.write(tmp_path / "new.wav", tones(3, 16000, seed=99), 16000, subtype="FLOAT")
    s3_store.s3.upload_file(str(tmp_path / "new.wav"), "archive", "changing/a.wav")  # new ETag and size
    capsys.readouterr()
    assert main(args) == EXIT_OK
    assert "files skipped (done by an earlier run): 1," in capsys.readouterr().err  # b.flac only
    rows = pq.read_table(out).to_pylist()
    assert sorted({r["file"] for r in rows}) == ["s3://archive/changing/a.wav", "s3://archive/changing/b.flac"]
    assert max(r["end_s"] for r in rows if r["file"].endswith("a.wav")) == 3.0  # the new 3 s recording


def test_an_object_gone_before_it_is_read_is_a_failure_row(s3_store, site, tiny_model):
    from avex_hub.audio.folders import find_audio
    from avex_hub.embed.inference import inference_settings, iter_file_results

    s3_store.s3.upload_file(str(site / "north" / "a.wav"), "archive", "gone/a.wav")
    s3_store.s3.upload_file(str(site / "north" / "b.flac"), "archive", "gone/b.flac")
    with using_options(s3_store.options()):
        files = find_audio(["s3://archive/gone/"]).files
        s3_store.s3.delete_object(Bucket="archive", Key="gone/a.wav")  # listed, then deleted
        results = {r.path: r for r in iter_file_results(tiny_model, files, inference_settings(tiny_model, "embed"),
                                                         num_workers=0, progress=False)}
    assert results["s3://archive/gone/a.wav"].error.startswith("FileNotFoundError: s3://archive/gone/a.wav")
    assert results["s3://archive/gone/b.flac"].error is None and results["s3://archive/gone/b.flac"].num_windows


def test_predict_and_embed_read_a_url(s3_store, site, tiny_model):
    with using_options(s3_store.options()):
        remote = tiny_model.predict("s3://archive/cli/north/a.wav", top_k=3, per_window=True)
        remote_embedding = tiny_model.embed("s3://archive/cli/north/b.flac", channels="all")
    local = tiny_model.predict(site / "north" / "a.wav", top_k=3, per_window=True)
    assert [(p.start_s, p.label) for p in remote] == [(p.start_s, p.label) for p in local]
    assert np.allclose([p.score for p in remote], [p.score for p in local], atol=1e-6)
    local_embedding = tiny_model.embed(str(site / "north" / "b.flac"), channels="all")
    assert remote_embedding.shape == local_embedding.shape == (2, tiny_model.embedding_dim)
    np.testing.assert_allclose(remote_embedding.numpy(), local_embedding.numpy(), atol=1e-6)


@pytest.mark.parametrize("options, says", [
    ({"key": "AKIAWRONG", "secret": "wrong-s3cr3t"}, "refused the credentials (InvalidAccessKeyId)"),
    ({"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "wrong-s3cr3t",
      "config_kwargs": {"retries": {"max_attempts": 1}}}, "cannot reach the storage service"),
])
def test_a_store_that_cannot_be_used_is_one_line_and_exit_2(s3_store, site, tmp_path, capsys, options, says):
    options = {"endpoint_url": s3_store.endpoint, **options}
    with s3_store.authorization():
        code = main(["classify", "s3://archive/cli/", "--out", str(tmp_path / "x.csv"),
                     "--storage-options", json.dumps(options), *QUIET])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and err.count("\n") == 0 and says in err and "wrong-s3cr3t" not in err
    assert "--storage-options" in err


def test_a_missing_key_is_a_usage_error_and_an_unwritable_out_is_checked_first(s3_store, site, tmp_path, capsys):
    assert main(["classify", "s3://archive/cli/nothing-here.wav", "--out", str(tmp_path / "x.csv"),
                 *_options(s3_store), *QUIET]) == EXIT_USAGE
    assert "input not found: s3://archive/cli/nothing-here.wav" in capsys.readouterr().err
    with s3_store.authorization():  # the reader may read bucket open, and write nowhere
        s3_store.s3.upload_file(str(site / "north" / "a.wav"), "open", "a.wav")
        code = main(["classify", "s3://open/a.wav", "--out", "s3://outputs/denied/x.csv", "--storage-options",
                     json.dumps(s3_store.options(s3_store.reader)), *QUIET])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and err.startswith("avex-hub: error: --out s3://outputs/denied/x.csv: ")
    assert "access denied" in err and "may not write there" in err and "read and list" not in err
    assert err.count("\n") == 0 and s3_store.keys("outputs", "denied/") == []


def test_an_out_url_of_the_wrong_format_is_named_as_given(s3_store, site, capsys):
    assert main(["classify", "s3://archive/cli/north/a.wav", "--out", "s3://outputs/wrong/x.parquet",
                 *_options(s3_store), *QUIET]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("avex-hub: error: --out s3://outputs/wrong/x.parquet: classify writes .csv files")
    assert "avex-hub-out-" not in err and err.count("\n") == 0 and s3_store.keys("outputs", "wrong/") == []


def test_a_manifest_may_list_urls(s3_store, site, tmp_path, tiny_model):
    from avex_hub.audio.datasets import AudioDataset

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,start_s,end_s\n"
                        "s3://archive/cli/north/a.wav,owl,1.0,3.0\n"
                        f"{site / 'north' / 'a.wav'},owl,1.0,3.0\n"
                        "s3://archive/cli/south/missing.wav,owl,,\n", encoding="utf-8")
    with using_options(s3_store.options()):
        with pytest.raises(FileNotFoundError, match="missing.wav: file not found"):
            AudioDataset.from_manifest(manifest)
        with pytest.warns(UserWarning, match="skipped 1 of 3 items"):
            dataset = AudioDataset.from_manifest(manifest, on_error="skip")
        remote, local = dataset[0], dataset[1]
    assert remote["path"] == "s3://archive/cli/north/a.wav" and len(dataset) == 2
    assert np.array_equal(remote["audio"].numpy(), local["audio"].numpy())


def test_shards_written_to_the_store_merge_from_it(s3_store, site, tmp_path, capsys):
    """Two machines' shards of one bucket prefix, each written to the store with its record; merged from there into
    the store, equal to one unsharded run, every input covered."""
    whole = tmp_path / "whole.csv"
    assert main(["classify", "s3://archive/cli/", "--out", str(whole), *_options(s3_store), *QUIET]) == EXIT_PARTIAL
    shards = [f"s3://outputs/split/s{i}.csv" for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        main(["classify", "s3://archive/cli/", "--out", out, "--shard", f"{i}/2", *_options(s3_store), *QUIET])
    assert {f"split/s{i}.csv.shard.json" for i in (1, 2)} <= set(s3_store.keys("outputs", "split/"))
    merged = "s3://outputs/split/all.csv"
    assert main(["merge", *shards, "--out", merged, "--inputs", "s3://archive/cli/", *_options(s3_store)]) \
        == EXIT_PARTIAL  # the corrupt file is in one shard's failure list, and so in the merged one
    body = s3_store.s3.get_object(Bucket="outputs", Key="split/all.csv")["Body"].read().decode()
    assert sorted(csv.DictReader(io.StringIO(body)), key=lambda r: (r["file"], r["start_s"], r["rank"])) == \
        sorted(_rows(whole), key=lambda r: (r["file"], r["start_s"], r["rank"]))
    failures = s3_store.s3.get_object(Bucket="outputs", Key="split/all.csv.failures.csv")["Body"].read().decode()
    assert list(csv.DictReader(io.StringIO(failures)))[0]["path"] == "s3://archive/cli/south/d_corrupt.wav"
    assert "not in any merged output" not in failures and "inputs are in no output" not in capsys.readouterr().err


def test_npz_shards_merge_column_by_column_into_the_store(s3_store, site, tmp_path):
    """An NPZ merge written to the store (one upload of the finished file) holds the arrays of a local merge."""
    shards = [tmp_path / f"s{i}.npz" for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        main(["embed", str(site), "--out", str(out), "--shard", f"{i}/2", *QUIET])
    local = tmp_path / "all.npz"
    assert main(["merge", *map(str, shards), "--out", str(local)]) == EXIT_PARTIAL  # the corrupt file's failure
    assert main(["merge", *map(str, shards), "--out", "s3://outputs/npz/all.npz", *_options(s3_store)]) \
        == EXIT_PARTIAL
    body = s3_store.s3.get_object(Bucket="outputs", Key="npz/all.npz")["Body"].read()
    assert set(s3_store.keys("outputs", "npz/")) == {"npz/all.npz", "npz/all.npz.failures.csv"}
    with np.load(io.BytesIO(body), allow_pickle=False) as stored, np.load(local, allow_pickle=False) as here:
        assert stored.files == here.files and len(here["start_s"]) > 0
        for key in here.files:
            assert stored[key].dtype == here[key].dtype
            np.testing.assert_array_equal(stored[key], here[key])

def test_index_refuses_urls_in_one_line_before_any_work(tmp_path, capsys):
    pytest.importorskip("perch_hoplite")
    db = tmp_path / "archive"
    assert main(["index", "s3://archive/cli/", "--db", str(db), "--checkpoint", str(FIXTURE), "--no-progress"]) \
        == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s3://archive/cli/: avex-hub index reads local files only" in err
    assert not db.exists()


@pytest.mark.parametrize("argv", [["export", "esp_aves2_sl_beats_all", "--out", "s3://outputs/model.onnx"],
                                  ["scores", "emb.parquet", "--probe", "p.safetensors", "--out", "s3://outputs/s.csv"],
                                  ["events", "scores.csv", "--threshold", "0.5", "--out", "e.csv",
                                   "--raven", "s3://outputs/tables/"]])
def test_a_command_that_writes_local_files_refuses_an_out_url(argv, tmp_path, monkeypatch, capsys):
    """--out and --raven are URLs only for embed, classify and merge; any other command names the URL in one line
    (exit 2) before any work, and no local path made from it (s3:/outputs/...) appears."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    url = next(a for a in argv if a.startswith("s3://"))
    assert err.count("\n") == 1 and err.startswith(f"avex-hub: error: --{'raven' if 'tables' in url else 'out'} {url}: "
                                                   f"avex-hub {argv[0]} writes local files only")
    assert list(tmp_path.iterdir()) == []


def _leaks(secret: str, folder: Path, stderr: str) -> list[str]:
    """Where ``secret`` shows: stderr, and every file under ``folder`` (read as bytes)."""
    found = ["stderr"] if secret in stderr else []
    return found + [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_url_with_a_token_in_its_query_is_refused_and_the_token_written_nowhere(http_store, site, tmp_path,
                                                                                  capsys):
    shutil.copy(site / "north" / "a.wav", http_store.folder / "rec0.wav")
    port = http_store.url("").split(":")[2].split("/")[0]
    for parameter in ("access_token", "api_key"):
        code = main(["classify", http_store.url(f"rec0.wav?{parameter}=PWSECRET9"), "--out", str(tmp_path / "c.csv"),
                     *QUIET])
        err = capsys.readouterr().err.strip()
        assert code == EXIT_USAGE and err.count("\n") == 0 and f"127.0.0.1:{port}/rec0.wav" in err
        assert parameter in err and _leaks("PWSECRET9", tmp_path, err) == []
    code = main(["classify", str(site / "north" / "a.wav"), "--out", "s3://outputs/t.csv?access_token=PWSECRET9",
                 *QUIET])  # the refusal quotes the --out given, with the token's value hidden
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and "--out s3://outputs/t.csv?access_token=***: " in err and "PWSECRET9" not in err


@pytest.mark.parametrize("argv", [
    ["classify", "x.wav", "--out", "x.csv", "--storage-option", '{"secret": "LEAKME77"}'],
    ["index", "x.wav", "--db", "db", "--storage-options", '{"secret":"LEAKME77"}'],
    ["classify", "x.wav", "--out", "x.csv", '--storage-optionz={"secret": "LEAKME77"}'],
])
def test_a_usage_error_never_echoes_an_options_value(argv, capsys):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unrecognized arguments: --storage-option" in err and "values not shown" in err
    assert "LEAKME77" not in err


def test_an_endpoint_that_never_answers_is_exit_2_in_bounded_time_and_its_password_written_nowhere(
        site, tmp_path, capsys, monkeypatch, offline_cloud_env):
    import socket

    from avex_hub.storage import locations

    monkeypatch.setattr(locations, "CHECK_TIMEOUT_S", 1)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        options = {"endpoint_url": f"http://minio:PASSW0RDX@127.0.0.1:{silent.getsockname()[1]}", "key": "k",
                   "secret": "s3cr3tPLANT"}
        for given, out in ((["s3://archive/cli/"], str(tmp_path / "u.csv")),
                           ([str(site / "north" / "a.wav")], "s3://outputs/silent/u.csv")):
            code = main(["classify", *given, "--out", out, "--storage-options", json.dumps(options), *QUIET])
            err = capsys.readouterr().err.strip()
            assert code == EXIT_USAGE and err.count("\n") == 0 and "did not answer within 1 s" in err
            assert "endpoint_url in --storage-options" in err and not (tmp_path / "u.csv").exists()
            assert _leaks("PASSW0RDX", tmp_path, err) == [] and _leaks("s3cr3tPLANT", tmp_path, err) == []


@pytest.mark.parametrize("last_modified", [True, False])
def test_an_http_object_without_etag_replaced_by_one_of_the_same_size_is_computed_again(http_store, tmp_path,
                                                                                        last_modified):
    """Identified by Last-Modified (and size) when the server sends no ETag; with neither, never skipped."""
    import os

    name = f"noetag-{last_modified}.wav"
    sf.write(http_store.folder / name, tones(3, 16000, seed=21), 16000)
    argv = ["classify", http_store.url(name), "--out", str(tmp_path / "c.csv"), *QUIET]
    with http_store.headers(etag=False, last_modified=last_modified):
        assert main(argv) == EXIT_OK
        before = _rows(tmp_path / "c.csv")
        size = (http_store.folder / name).stat().st_size
        sf.write(http_store.folder / name, tones(3, 16000, seed=22), 16000)  # other audio, the same size
        later = (http_store.folder / name).stat().st_mtime + 10
        os.utime(http_store.folder / name, (later, later))
        assert (http_store.folder / name).stat().st_size == size
        assert main(argv) == EXIT_OK
        after = _rows(tmp_path / "c.csv")
    assert len(after) == len(before) and [r["score"] for r in after] != [r["score"] for r in before]


@pytest.mark.parametrize("case, says", [
    ("web server", "endpoint_url in --storage-options"),
    ("profile", '"profile" in --storage-options'),
    ("types", "--storage-options: the filesystem for s3://archive/cli/ cannot use the options given"),
])
def test_an_endpoint_profile_or_option_the_store_cannot_use_is_exit_2_before_any_work(
        case, says, s3_store, http_store, site, tmp_path, capsys):
    options = {"web server": {"endpoint_url": http_store.url("").rstrip("/"), "key": "k", "secret": "s3cr3tPLANT"},
               "profile": {"endpoint_url": s3_store.endpoint, "profile": "nosuch"},
               "types": {"endpoint_url": s3_store.endpoint, "config_kwargs": "str", "secret": "s3cr3tPLANT"}}[case]
    code = main(["classify", "s3://archive/cli/", "--out", str(tmp_path / "x.csv"), "--storage-options",
                 json.dumps(options), *QUIET])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and err.count("\n") == 0 and says in err, err
    assert list(tmp_path.iterdir()) == [] and "s3cr3tPLANT" not in err
