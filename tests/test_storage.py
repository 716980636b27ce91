"""avex_hub.storage against real servers started by the tests (tests/cloud_servers.py): moto's S3 server through
s3fs, and a ranged HTTP server. Listing with the folder walk's rules, ranged reads of a long file, identities,
credentials (none, wrong, not allowed), an unreachable endpoint and an object deleted while it is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avex_hub.audio.folders import AUDIO_EXTENSIONS, find_audio
from avex_hub.storage import listing, locations, objects
from conftest import tones

pytest.importorskip("s3fs", reason="the cloud extra: pip install -e '.[cloud]'")


def _tree(root: Path) -> Path:
    """Audio in nested folders, plus what the walk leaves out: a text file, a hidden file and a hidden folder."""
    for name, seconds in [("b.wav", 1.0), ("a.flac", 0.5), ("sub/z.wav", 0.5), ("sub/deeper/c.wav", 0.5),
                          ("a_sub/y.wav", 0.5), ("sub/.hidden.wav", 0.5), (".cache/x.wav", 0.5)]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tones(seconds, 16000), 16000)
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def archive(s3_store, tmp_path_factory):
    """The same tree locally and at s3://archive/site (the admin's options in force)."""
    local = _tree(tmp_path_factory.mktemp("tree"))
    s3_store.upload(local, "archive", "site")
    return local


def test_urls_are_told_from_paths_and_credentials_in_urls_are_refused():
    assert [locations.protocol_of(p) for p in ("s3://b/k", "GS://b", "/data/x.wav", "C:\\x.wav", "rel/x")] == \
        ["s3", "gs", None, None, None]
    assert locations.is_url("https://h/a.wav") and not locations.is_url("file:///data/a.wav")
    assert locations.local_path("file:///data/a.wav") == "/data/a.wav"
    assert locations.check_url("https://h/a.wav?format=wav") == "https://h/a.wav?format=wav"
    with pytest.raises(ValueError, match="carries a user name or password") as caught:
        locations.check_url("https://me:hunter2@h/a.wav")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match=r"credential in its query \(X-Amz-Signature\)") as caught:
        locations.check_url("https://b.s3.amazonaws.com/a.wav?X-Amz-Signature=s3cr3t&X-Amz-Date=1")
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("parameter", ["access_token", "api_key", "apikey", "key", "token", "code", "password",
                                       "client_secret", "Credential", "sig", "X-Goog-Signature", "AWSAccessKeyId"])
def test_a_url_with_any_credential_parameter_is_refused_naming_host_and_port_never_the_value(parameter):
    url = f"http://127.0.0.1:18765/rec0.wav?format=wav&{parameter}=PWSECRET9"
    with pytest.raises(ValueError, match="credential in its query") as caught:
        locations.check_url(url)
    message = str(caught.value)
    assert message.startswith("http://127.0.0.1:18765/rec0.wav: ") and parameter in message
    assert "PWSECRET9" not in message and "\n" not in message
    assert locations.redact(f"GET {url} failed") == (f"GET http://127.0.0.1:18765/rec0.wav?format=wav&{parameter}=*** "
                                                     "failed")


def test_redact_hides_userinfo_and_the_secret_storage_options():
    options = {"endpoint_url": "http://minio:PASSW0RDX@127.0.0.1:18766", "key": "AKIAPLANTED", "anon": False,
               "region_name": "us-east-1", "client_kwargs": {"aws_session_token": "T0KENPLANTED"}}
    text = ('Read timeout on endpoint URL: "http://minio:PASSW0RDX@127.0.0.1:18766/b?list-type=2"; key AKIAPLANTED, '
            "token T0KENPLANTED, region us-east-1")
    with locations.using_options(options):
        redacted = locations.redact(text)
    assert redacted == ('Read timeout on endpoint URL: "http://***@127.0.0.1:18766/b?list-type=2"; key ***, token ***, '
                        "region us-east-1")
    assert locations.redact("s3://bucket/a@b.wav") == "s3://bucket/a@b.wav"  # an @ in a key is not a user name


def test_storage_options_are_a_json_object_and_never_echoed():
    assert locations.parse_storage_options('{"anon": true}') == {"anon": True}
    with pytest.raises(ValueError, match="not JSON") as caught:
        locations.parse_storage_options('{"secret": "s3cr3t",}')
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(ValueError, match="found a list"):
        locations.parse_storage_options('["anon"]')
    with locations.using_options({"anon": True}):
        assert locations.current_options() == {"anon": True}
    assert locations.current_options() == {}


def test_a_prefix_lists_as_the_folder_walk_lists_its_folder(s3_store, archive):
    local = find_audio([archive])
    expected = [Path(f).relative_to(archive).as_posix() for f in local.files]
    with locations.using_options(s3_store.options()):
        for given in ("s3://archive/site", "s3://archive/site/"):
            found = listing.list_location(given, endings=AUDIO_EXTENSIONS)
            assert [f.removeprefix("s3://archive/site/") for f in found.files] == expected
            assert found.hidden == local.hidden == 2 and found.failures == {}
        # an object named directly is taken whatever its ending; the run's own parts prefix is left out
        assert listing.list_location("s3://archive/site/notes.txt", endings=AUDIO_EXTENSIONS).files == \
            ["s3://archive/site/notes.txt"]
        skipped = listing.list_location("s3://archive/site", endings=AUDIO_EXTENSIONS, skip=("s3://archive/site/sub",))
        assert [f.removeprefix("s3://archive/site/") for f in skipped.files] == \
            [e for e in expected if not e.startswith("sub/")]
        with pytest.raises(FileNotFoundError, match="input not found: s3://archive/nothing"):
            listing.list_location("s3://archive/nothing", endings=AUDIO_EXTENSIONS)
        with pytest.raises(FileNotFoundError, match="s3://no-such-bucket/x"):
            listing.list_location("s3://no-such-bucket/x", endings=AUDIO_EXTENSIONS)
    assert expected == ["a.flac", "b.wav", "a_sub/y.wav", "sub/z.wav", "sub/deeper/c.wav"]


def test_https_urls_are_files_and_are_read_in_ranges(http_store, tmp_path):
    """A 10-minute WAV (19 MB) streamed through libsndfile: every request is a range of at most one block, and the
    file is fetched about once, never whole."""
    rate, seconds = 16000, 600
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, rate * seconds).astype(np.float32)
    sf.write(http_store.folder / "long.wav", audio, rate, subtype="PCM_16")
    size = (http_store.folder / "long.wav").stat().st_size
    url = http_store.url("long.wav")
    assert listing.list_location(url, endings=AUDIO_EXTENSIONS).files == [url]  # a server cannot be listed
    http_store.requests.clear()
    with objects.open_binary(url) as reader, sf.SoundFile(reader) as f:
        decoded = np.concatenate([block[:, 0] for block in f.blocks(rate * 30, dtype="float32", always_2d=True)])
        objects.raise_source_error(reader)
    np.testing.assert_array_equal(decoded, sf.read(http_store.folder / "long.wav", dtype="float32")[0])
    ranges = [spec for method, _, spec in http_store.requests if method == "GET"]
    assert ranges and all(spec is not None for spec in ranges)
    lengths = [int(b) - int(a) + 1 for a, b in (spec[6:].split("-") for spec in ranges)]
    assert max(lengths) <= objects.BLOCK_SIZE + 2**16  # one read-ahead block plus the read that asked for it
    assert size <= sum(lengths) <= size + 2 * objects.BLOCK_SIZE
    ident = objects.identity(url)
    assert ident["size"] == size and ident["etag"] == f"{size}-{(http_store.folder / 'long.wav').stat().st_mtime_ns}"


def test_a_long_object_streams_from_s3_and_its_identity_follows_its_content(s3_store, tmp_path):
    rate = 16000
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, rate * 300).astype(np.float32)
    sf.write(tmp_path / "long.flac", audio, rate, subtype="PCM_16")
    s3_store.s3.upload_file(str(tmp_path / "long.flac"), "archive", "long/long.flac")
    url = "s3://archive/long/long.flac"
    with locations.using_options(s3_store.options()):
        with objects.open_binary(url) as reader, sf.SoundFile(reader) as f:
            f.seek(rate * 200)  # a seek into the middle reads from there
            middle = f.read(rate, dtype="float32")
            objects.raise_source_error(reader)
        first = objects.identity(url)
    np.testing.assert_array_equal(middle, sf.read(tmp_path / "long.flac", dtype="float32")[0][rate * 200: rate * 201])
    head = s3_store.s3.head_object(Bucket="archive", Key="long/long.flac")  # a multipart upload's ETag: "<md5>-2"
    assert first["size"] == (tmp_path / "long.flac").stat().st_size and first["etag"] == head["ETag"].strip('"')
    s3_store.s3.put_object(Bucket="archive", Key="long/long.flac", Body=b"replaced")
    with locations.using_options(s3_store.options()):  # a new run lists afresh
        second = objects.identity(url)
    assert second["size"] == 8 and second["etag"] != first["etag"]


def test_an_object_deleted_while_it_is_read_fails_with_the_stores_reason(s3_store, tmp_path):
    """libsndfile cannot pass an exception through its C callbacks: the reader keeps it, the stream ends, and
    raise_source_error gives it, so the file fails instead of passing for a short one."""
    rate = 16000
    sf.write(tmp_path / "gone.wav", np.zeros(rate * 200, np.float32), rate, subtype="PCM_16")  # 6.4 MB, 2 blocks
    s3_store.s3.upload_file(str(tmp_path / "gone.wav"), "archive", "gone/gone.wav")
    with locations.using_options(s3_store.options()):
        with objects.open_binary("s3://archive/gone/gone.wav") as reader, sf.SoundFile(reader) as f:
            assert len(f.read(rate * 10)) == rate * 10  # the first block
            s3_store.s3.delete_object(Bucket="archive", Key="gone/gone.wav")
            rest = f.read()
            assert len(rest) < rate * 190
            with pytest.raises(FileNotFoundError, match="s3://archive/gone/gone.wav: not found in the store"):
                objects.raise_source_error(reader)


def test_no_credentials_read_anonymously_as_public_buckets_allow(s3_store, archive):
    """With no key in the options, the environment or a profile, S3 is read unsigned (anon=True), as NOAA's and
    Orcasound's buckets are. (moto answers an unsigned request to a private bucket with a server error where S3 says
    AccessDenied, so the refusal is tested with signed requests below.)"""
    assert "AWS_ACCESS_KEY_ID" not in os.environ and os.environ["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    with locations.using_options({"endpoint_url": s3_store.endpoint}):
        assert locations.filesystem("s3://archive/site")[0].anon is True
        assert len(listing.list_location("s3://archive/site", endings=AUDIO_EXTENSIONS).files) == 5
    with locations.using_options(s3_store.options()):
        assert locations.filesystem("s3://archive/site")[0].anon is False


def test_wrong_credentials_and_permissions_are_told_apart_without_the_secret(s3_store, archive):
    s3_store.s3.upload_file(str(archive / "b.wav"), "open", "b.wav")
    with s3_store.authorization():
        with locations.using_options(s3_store.options(s3_store.reader)):
            assert "s3://open/b.wav" in listing.list_location("s3://open/", endings=AUDIO_EXTENSIONS).files
            denied = listing.list_location("s3://archive/site", endings=AUDIO_EXTENSIONS)
            assert list(denied.failures) == ["s3://archive/site"] and "PermissionError: cannot read this object or " \
                "list this prefix" in denied.failures["s3://archive/site"]  # no object there, or one not readable
            one = listing.list_location("s3://archive/site/b.wav", endings=AUDIO_EXTENSIONS)
            assert "PermissionError: cannot read this object or list this prefix" in one.failures[
                "s3://archive/site/b.wav"]
        with locations.using_options(s3_store.options(("AKIAWRONGKEY", "wrong-s3cr3t"))):
            with pytest.raises(locations.StorageAccessError, match="refused the credentials") as caught:
                listing.list_location("s3://open/", endings=AUDIO_EXTENSIONS)
    message = str(caught.value)
    assert "\n" not in message and "wrong-s3cr3t" not in message and "AWS_ACCESS_KEY_ID" in message


def test_an_unreachable_endpoint_is_one_line_naming_the_endpoint_setting(offline_cloud_env):
    with locations.using_options({"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s3cr3t",
                                  "config_kwargs": {"retries": {"max_attempts": 1}}}):
        with pytest.raises(locations.StorageAccessError, match="cannot reach the storage service") as caught:
            listing.list_location("s3://archive/site", endings=AUDIO_EXTENSIONS)
    assert "endpoint_url in --storage-options" in str(caught.value) and "s3cr3t" not in str(caught.value)
    with locations.using_options({"endpoint_url": "http://127.0.0.1:9", "retries": 1}):  # not an s3fs argument
        with pytest.raises(locations.StorageAccessError, match="cannot use the options given"):
            listing.list_location("s3://archive/site", endings=AUDIO_EXTENSIONS)


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections (the kernel's backlog) and never answers."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://minio:PASSW0RDX@127.0.0.1:{server.getsockname()[1]}"


def test_an_endpoint_that_never_answers_is_one_line_within_the_checks_bound(silent_endpoint, monkeypatch,
                                                                           offline_cloud_env):
    monkeypatch.setattr(locations, "CHECK_TIMEOUT_S", 1)
    with locations.using_options({"endpoint_url": silent_endpoint, "key": "k", "secret": "s3cr3tPLANT"}):
        with pytest.raises(locations.StorageAccessError, match="did not answer within 1 s") as caught:
            listing.list_location("s3://archive/site/", endings=AUDIO_EXTENSIONS)
    message = str(caught.value)
    assert "endpoint_url in --storage-options" in message and "\n" not in message
    assert "PASSW0RDX" not in message and "s3cr3tPLANT" not in message


def test_a_bucket_name_the_store_does_not_take_blames_the_url(s3_store):
    says = r"s3://Bad_Bucket!/: not a bucket or key name the store takes \(.*Invalid bucket name.*\); check the URL"
    with locations.using_options(s3_store.options()), pytest.raises(locations.StorageAccessError, match=says):
        listing.list_location("s3://Bad_Bucket!/", endings=AUDIO_EXTENSIONS)


@pytest.mark.parametrize("options, environment, says", [
    ({"profile": "nosuch"}, {}, 'the AWS profile in use is not configured'),
    ({}, {"AWS_PROFILE": "nosuch"}, 'the AWS profile in use is not configured'),
    ({"config_kwargs": "str"}, {}, "--storage-options: the filesystem for s3://archive/site/ cannot use the options"),
    ({"endpoint_url": "junk"}, {}, "--storage-options: the filesystem for s3://archive/site/ cannot use the options"),
    ({"endpoint_url": "http://store.invalid:9000", "config_kwargs": {"retries": {"max_attempts": 1}}}, {},
     "cannot reach the storage service"),  # a name that never resolves (RFC 2606)
    ({"endpoint_url": "http://minio:PASSW0RDX@store.invalid:9000", "key": "k", "secret": "s"}, {},
     "cannot use the storage service: s3://archive/site/: HTTPClientError"),  # aiohttp: no password in the URL
])
def test_a_profile_or_options_the_store_cannot_use_are_one_line(options, environment, says, monkeypatch,
                                                                offline_cloud_env):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with locations.using_options(options):
        with pytest.raises(locations.StorageAccessError) as caught:
            listing.list_location("s3://archive/site/", endings=AUDIO_EXTENSIONS)
    assert says in str(caught.value) and "\n" not in str(caught.value) and "PASSW0RDX" not in str(caught.value)
    assert "--storage-options" in str(caught.value)  # the option to fix


def test_a_server_without_ranges_and_an_http_folder_say_so(http_store):
    from avex_hub.audio.decoding import load_audio

    sf.write(http_store.folder / "whole.wav", tones(140, 16000), 16000, subtype="PCM_16")  # 4.5 MB: over a block
    assert (http_store.folder / "whole.wav").stat().st_size > objects.BLOCK_SIZE
    with http_store.headers(ranges=False), pytest.raises(OSError, match="does not serve byte ranges") as caught:
        load_audio(http_store.url("whole.wav"))
    assert "download it and give the local path" in str(caught.value) and "block_size" not in str(caught.value)
    for folder in (http_store.url(""), http_store.url("recordings/")):
        with pytest.raises(ValueError, match="a web server cannot be listed like a folder"):
            listing.list_location(folder, endings=AUDIO_EXTENSIONS)


def test_an_object_that_may_be_read_but_not_listed_is_read(s3_store, archive):
    """Credentials that may get objects of a bucket but not list it: an object named directly is read."""
    getter = s3_store.user("getter", ["s3:GetObject", "s3:HeadObject"], ["arn:aws:s3:::archive/*"])
    with s3_store.authorization(), locations.using_options(s3_store.options(getter)):
        assert listing.list_location("s3://archive/site/b.wav", endings=AUDIO_EXTENSIONS).files == \
            ["s3://archive/site/b.wav"]
        with objects.open_binary("s3://archive/site/b.wav") as reader:
            assert reader.read() == (archive / "b.wav").read_bytes()
        assert "cannot list this prefix" in listing.list_location("s3://archive/site/", endings=AUDIO_EXTENSIONS
                                                                  ).failures["s3://archive/site/"]


def test_a_google_storage_endpoint_that_does_not_resolve_is_one_line_within_the_checks_bound(monkeypatch,
                                                                                           offline_cloud_env):
    """gcsfs retries a failed name lookup for minutes; the check before any work stops at its bound."""
    pytest.importorskip("gcsfs", reason="the cloud extra: pip install -e '.[cloud]'")
    monkeypatch.setattr(locations, "CHECK_TIMEOUT_S", 1)
    with locations.using_options({"endpoint_url": "http://store.invalid:9000", "token": "anon"}):  # RFC 2606
        with pytest.raises(locations.StorageAccessError) as caught:
            listing.list_location("gs://somebucket/x/", endings=AUDIO_EXTENSIONS)
    assert "endpoint_url in --storage-options" in str(caught.value) and "\n" not in str(caught.value)


def test_the_extraction_cache_keys_a_dataset_of_urls_by_each_objects_identity(http_store):
    """A dataset of URLs gets a cache key (it raised KeyError 'mtime_ns'): the same objects the same key, a
    replaced object another, and an object the server cannot identify a new key each time (never reused)."""
    from avex_hub.embed.cache import dataset_fingerprint
    from avex_hub.embed.clips import ClipList

    for i in (1, 2):
        sf.write(http_store.folder / f"cache{i}.wav", tones(2, 16000, seed=i), 16000, subtype="PCM_16")
    clips = ClipList([http_store.url("cache1.wav")])
    first = dataset_fingerprint(clips)
    assert dataset_fingerprint(clips) == first
    os.replace(http_store.folder / "cache2.wav", http_store.folder / "cache1.wav")  # same size, other audio
    assert dataset_fingerprint(clips) != first
    with http_store.headers(etag=False, last_modified=False):
        assert dataset_fingerprint(clips) != dataset_fingerprint(clips)
