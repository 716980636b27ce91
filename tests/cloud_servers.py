"""Servers the storage tests start themselves, one per test session (tests/conftest.py imports the fixtures).

* ``s3_store``: moto's S3-compatible server in a thread on 127.0.0.1, reached by s3fs through ``endpoint_url``
  (real HTTP requests, nothing mocked). Two IAM users: ``admin`` (everything) and ``reader`` (read and list bucket
  ``open`` only). Authorization is off unless a test asks for it with ``store.authorization()``, so that requests
  with no credentials at all read as a public bucket does.
* ``gcs_store``: gcp-storage-emulator's GCS JSON API server (its request handler in a threading HTTP server on
  127.0.0.1, objects in memory), reached by gcsfs through ``endpoint_url`` with ``token="anon"``; it records each
  download's Range header. gcsfs's default filesystem (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT``, on by default) first
  asks Google's gRPC storage-layout API what kind of bucket it reads; no emulator answers that, and every call then
  waits out a 60 s timeout before falling back to the HTTP filesystem it uses for ordinary buckets. The fixture
  registers that HTTP filesystem (``gcsfs.core.GCSFileSystem``) for ``gs://`` during the session.
* ``http_store``: a plain HTTP server over a folder that answers Range requests and records every request's range,
  for the https:// inputs and for showing that long files are read in ranges; ``headers()`` leaves out its ETag
  or Last-Modified header.

Nothing here reaches beyond 127.0.0.1: the AWS instance-metadata lookup and Google's metadata check are switched
off for the session, and AWS credentials from the environment or a profile are hidden.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

_OFFLINE_ENV = {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
_HIDDEN_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
               "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def offline_cloud_env():
    """The process environment with no cloud credentials and no metadata lookups, restored after the session."""
    saved = {k: os.environ.get(k) for k in (*_OFFLINE_ENV, *_HIDDEN_ENV)}
    os.environ.update(_OFFLINE_ENV)
    for key in _HIDDEN_ENV:
        os.environ.pop(key, None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class S3Store:
    """The running moto server: its endpoint, two users' keys, and helpers to fill and inspect buckets."""

    BUCKETS = ("archive", "open", "outputs")

    def __init__(self) -> None:
        import boto3
        import requests
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._requests = requests
        self._boto3 = boto3
        iam = self.client("iam", ("bootstrap", "bootstrap"))
        self.admin = self._user(iam, "admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
        # moto names S3 actions after the API call (s3:HeadObject, s3:ListObjectsV2) where AWS uses s3:GetObject and
        # s3:ListBucket: both spellings, so the policy means the same on either.
        actions = ["s3:GetObject", "s3:HeadObject", "s3:ListBucket", "s3:ListObjectsV2"]
        self.reader = self._user(iam, "reader", [{"Effect": "Allow", "Action": actions,
                                                  "Resource": ["arn:aws:s3:::open", "arn:aws:s3:::open/*"]}])
        self.s3 = self.client("s3", self.admin)
        for bucket in self.BUCKETS:
            self.s3.create_bucket(Bucket=bucket)

    def client(self, service: str, keys: tuple[str, str]):
        return self._boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                                  aws_access_key_id=keys[0], aws_secret_access_key=keys[1])

    @staticmethod
    def _user(iam, name: str, statements: list[dict]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="access",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def options(self, keys: tuple[str, str] | None = None, **more) -> dict:
        """Storage options for s3fs: this endpoint, and ``keys`` (the admin's by default; None-free)."""
        keys = self.admin if keys is None else keys
        return {"endpoint_url": self.endpoint, "key": keys[0], "secret": keys[1], **more}

    def user(self, name: str, actions: list[str], resources: list[str]) -> tuple[str, str]:
        """Another IAM user, allowed ``actions`` on ``resources`` only; its keys."""
        return self._user(self.client("iam", self.admin),
                          name, [{"Effect": "Allow", "Action": actions, "Resource": resources}])

    @contextlib.contextmanager
    def authorization(self):
        """Within the block every request must be signed by a known user and allowed by its policy."""
        self._requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0").raise_for_status()
        try:
            yield
        finally:
            self._requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"inf").raise_for_status()

    def upload(self, folder: Path, bucket: str, prefix: str) -> list[str]:
        """Every file under ``folder`` (hidden ones too) to ``s3://bucket/prefix/<relative path>``; their URLs."""
        urls = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            self.s3.upload_file(str(path), bucket, key)
            urls.append(f"s3://{bucket}/{key}")
        return urls

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def s3_store(offline_cloud_env):
    pytest.importorskip("s3fs", reason="the cloud extra: pip install -e '.[cloud]'")
    pytest.importorskip("moto.server", reason="moto's server mode: pip install -e '.[dev]'")
    store = S3Store()
    yield store
    store.stop()


class GcsStore:
    """The running GCS emulator: its endpoint, the storage options reaching it, helpers to fill a bucket, and
    ``ranges``: the Range header (None when whole) of every object download since the last ``ranges.clear()``."""

    BUCKETS = ("archive",)

    def __init__(self) -> None:
        from functools import partial

        from gcp_storage_emulator.handlers.buckets import create_bucket
        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage

        ranges: list[str | None] = []

        class Recording(RequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if "alt=media" in self.path or self.path.startswith("/download/"):
                    ranges.append(self.headers.get("Range"))
                super().do_GET()

        storage = Storage(use_memory_fs=True)
        for bucket in self.BUCKETS:
            create_bucket(bucket, storage)
        self.ranges = ranges
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Recording, storage))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.fs = self._filesystem()(**self.options(), skip_instance_cache=True)

    @staticmethod
    def _filesystem():
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem

    def options(self) -> dict:
        """Storage options for gcsfs: this endpoint, no credentials (the emulator checks none)."""
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "avex-hub-tests"}

    def upload(self, folder: Path, bucket: str, prefix: str) -> list[str]:
        """Every file under ``folder`` (hidden ones too) to ``gs://bucket/prefix/<relative path>``; their URLs."""
        urls = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            url = f"gs://{bucket}/{prefix}/{path.relative_to(folder).as_posix()}"
            self.fs.put_file(str(path), url)
            urls.append(url)
        return urls

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def gcs_store(offline_cloud_env):
    pytest.importorskip("gcsfs", reason="the cloud extra: pip install -e '.[cloud]'")
    pytest.importorskip("gcp_storage_emulator", reason="the GCS emulator: pip install -e '.[dev]'")
    import fsspec

    before = fsspec.get_filesystem_class("gs")
    fsspec.register_implementation("gs", GcsStore._filesystem(), clobber=True)  # see the module docstring
    store = GcsStore()
    yield store
    store.stop()
    fsspec.register_implementation("gs", before, clobber=True)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, answering ``Range: bytes=a-b`` with 206 and the slice, and records what was asked."""

    def log_message(self, *args) -> None:  # quiet: the test reads ``requests`` instead
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return None
        size = path.stat().st_size
        spec = self.headers.get("Range") if self.server.ranges else None  # a server without ranges sends it all
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        start, end = 0, size - 1
        if spec and spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
        handle = open(path, "rb")
        handle.seek(start)
        self.send_response(206 if spec else 200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if self.server.etag:
            self.send_header("ETag", f'"{size}-{int(path.stat().st_mtime_ns)}"')
        if self.server.last_modified:
            self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        self.send_header("Content-Length", str(end - start + 1))
        if spec:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        return _Slice(handle, end - start + 1)


class _Slice:
    """The part of an open file a response sends (``copyfile`` reads it to the end)."""

    def __init__(self, handle, length: int) -> None:
        self.handle, self.left = handle, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.handle.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that stops reading (a reader that needed only a range of a whole file sent) is no error here."""

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HttpStore:
    """A folder served over HTTP on 127.0.0.1: ``url(name)``; ``requests``: (method, path, Range header) of each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

        def handler(*args, **kwargs):
            return _RangeHandler(*args, directory=str(folder), **kwargs)

        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.server.requests = []
        self.server.etag = self.server.last_modified = self.server.ranges = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list:
        return self.server.requests

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    @contextlib.contextmanager
    def headers(self, *, etag: bool = True, last_modified: bool = True, ranges: bool = True):
        """Within the block the server sends an ETag and a Last-Modified header only where asked (a plain web server
        sends no ETag; some send neither), and answers a Range request with the whole file unless ``ranges``."""
        self.server.etag, self.server.last_modified, self.server.ranges = etag, last_modified, ranges
        try:
            yield
        finally:
            self.server.etag = self.server.last_modified = self.server.ranges = True

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def http_store(tmp_path_factory, offline_cloud_env):
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem: pip install -e '.[cloud]'")
    store = HttpStore(tmp_path_factory.mktemp("http_store"))
    yield store
    store.stop()
