"""URLs and the run's storage options: which inputs are URLs, the filesystem that reads one, and errors in one line.

A URL is ``protocol://...`` (``s3://bucket/prefix/``, ``gs://bucket/a.flac``, ``https://host/a.wav``); ``file://``
URLs are local paths (:func:`local_path`). Anything else is a local path, read as before.

Credentials come the standard way of each store: for S3 the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), a profile (``AWS_PROFILE``, ``~/.aws``) or an instance role; for
Google Cloud Storage ``GOOGLE_APPLICATION_CREDENTIALS`` or the gcloud login. ``--storage-options JSON`` (the CLI) or
``storage_options=`` (the library) passes keyword arguments to the fsspec filesystem (``{"endpoint_url":
"http://minio:9000"}``, ``{"profile": "archive"}``, ``{"anon": true}``); they hold for every URL of a run, and
:func:`using_options` scopes them. S3 without any credentials reads anonymously, as public buckets (NOAA's,
Orcasound's) allow. Nothing here prints, logs or stores the options: messages name the URL and what to fix.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
from typing import Iterator
from urllib.parse import parse_qsl, urlsplit

__all__ = ["StorageAccessError", "protocol_of", "is_url", "local_path", "absolute", "is_listable", "check_url",
           "redact", "check_store", "CHECK_TIMEOUT_S", "parse_storage_options", "using_options", "current_options",
           "filesystem", "storage_error"]

_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_UNLISTABLE = ("http", "https")  # an HTTP server cannot be listed: its URLs are files (or manifest rows)
# Query parameters that carry a credential (presigned URLs' signatures, tokens, API keys, passwords): an input's
# URL is written into outputs, so such a URL is refused, and such a parameter's value is never shown.
_SECRET_PARAMETERS = {"sig", "key", "code", "auth", "authorization", "pass", "pwd", "passwd", "apikey", "api_key",
                      "awsaccesskeyid"}
_SECRET_PARTS = ("signature", "credential", "token", "secret", "password", "api_key", "apikey", "access_key",
                 "private_key")
_QUERY_VALUE = re.compile(r"([?&;])([^=&;#\s\"'<>]+)=([^&;#\s\"'<>]*?)(?=[&;#\s\"'<>]|[:,.)]\s|[:,.)]?$)")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@\"'<>?#]*@")
# Error codes of S3-compatible services that mean the credentials themselves are wrong (not the permissions).
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_CREDENTIAL_KEYS = ("key", "secret", "token", "anon", "profile", "session")
_OPTIONS: contextvars.ContextVar[dict] = contextvars.ContextVar("avex_hub_storage_options", default={})
_FILESYSTEMS: contextvars.ContextVar[dict] = contextvars.ContextVar("avex_hub_filesystems", default={})


class StorageAccessError(OSError):
    """The store as a whole cannot be used: unreachable, credentials refused, or its fsspec package missing. The
    message says what to fix; it never holds the storage options."""


def protocol_of(path) -> str | None:
    """``"s3"`` for ``s3://bucket/key``, ``"file"`` for ``file:///x``; None for a plain path."""
    match = _PROTOCOL.match(path) if isinstance(path, str) else None
    return match.group(1).lower() if match else None


def is_url(path) -> bool:
    """Whether ``path`` names a remote object or prefix (a URL other than ``file://``)."""
    return protocol_of(path) not in (None, "file", "local")


def local_path(path):
    """``file:///data/a.wav`` -> ``/data/a.wav``; any other path or URL as it is."""
    if protocol_of(path) in ("file", "local"):
        return path.split("://", 1)[1]
    return path


def absolute(path) -> str:
    """An input's name that does not depend on the working directory: a URL as it is, a local path made absolute."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(local_path(path))


def is_listable(url: str) -> bool:
    """Whether a prefix of this store can be listed (not so for ``https://``: its URLs are files)."""
    return protocol_of(url) not in _UNLISTABLE


def _secret_parameter(name: str) -> bool:
    """Whether a URL query parameter of this name carries a credential (``X-Amz-Signature``, ``access_token``,
    ``api_key``, ``sig``, ``password`` ...)."""
    name = name.lower()
    return name in _SECRET_PARAMETERS or any(part in name for part in _SECRET_PARTS)


def _host(parts) -> str:
    """``host:port`` of a split URL, without any user name or password."""
    return (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")


def check_url(url: str) -> str:
    """``url``, or a ValueError when it carries credentials (a user name and password, or a query parameter such as
    a presigned URL's signature, a token or an API key): an input's URL is written into the outputs, the failure
    list and the messages of a run. The message names the host, port, path and the parameters, never a value."""
    parts = urlsplit(url)
    secret = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _secret_parameter(name)})
    if parts.username is not None or parts.password is not None or secret:
        what = "a user name or password" if not secret else f"a credential in its query ({', '.join(secret)})"
        raise ValueError(f"{parts.scheme}://{_host(parts)}{parts.path}: the URL carries {what}, which would be "
                         "written into the outputs and messages; give the URL without it and the credentials through "
                         "the environment or --storage-options")
    return url


def redact(text: str) -> str:
    """``text`` (a store's error, a message naming URLs) with every secret replaced by ``***``: a URL's user name
    and password, the values of credential query parameters (:func:`check_url`), and the string values of the
    storage options in force that are credentials (``key``, ``secret``, ``token``, ``password`` ...) or hold a
    URL's user name and password. Every message built from a store's error passes through here."""
    text = _USERINFO.sub(r"\1***@", str(text))
    text = _QUERY_VALUE.sub(lambda m: f"{m[1]}{m[2]}=***" if _secret_parameter(m[2]) else m[0], text)
    for value in sorted(_option_secrets(current_options()), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _option_secrets(options, key: str = "") -> set[str]:
    """The secret strings among ``options`` (nested dicts and lists too): values under a credential-like key, and
    the user name and password of any URL among them."""
    if isinstance(options, dict):
        return set().union(*(_option_secrets(v, str(k)) for k, v in options.items()))
    if isinstance(options, (list, tuple)):
        return set().union(*(_option_secrets(v, key) for v in options))
    if not isinstance(options, str) or not options:
        return set()
    found = set()
    if _secret_parameter(key) or any(word in key.lower() for word in ("key", "session", "auth", "credential")):
        found.add(options)
    parts = urlsplit(options) if "://" in options else None
    for part in (parts.username, parts.password) if parts is not None else ():
        if part:
            found.add(part)
    return {value for value in found if len(value) >= 3}


def parse_storage_options(text: str) -> dict:
    """``--storage-options JSON`` -> a dict of fsspec filesystem arguments; a ValueError that does not echo the text
    (it may hold credentials)."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--storage-options: expected a JSON object such as '{{\"anon\": true}}' or "
                         f"'{{\"endpoint_url\": \"http://minio:9000\"}}', found text that is not JSON ({error.msg} at "
                         f"character {error.pos}; the text is not shown: it may hold credentials)") from None
    if not isinstance(options, dict):
        raise ValueError(f"--storage-options: expected a JSON object ({{...}}), found a {type(options).__name__}")
    return options


@contextlib.contextmanager
def using_options(options: dict | None) -> Iterator[None]:
    """Within the block, URLs are opened with ``options`` (fsspec filesystem arguments) and filesystems are made
    afresh (a listing cached by an earlier run is not trusted)."""
    tokens = (_OPTIONS.set(dict(options or {})), _FILESYSTEMS.set({}))
    try:
        yield
    finally:
        _FILESYSTEMS.reset(tokens[1])
        _OPTIONS.reset(tokens[0])


def current_options() -> dict:
    """The storage options in force (a copy; for handing to another process, which enters :func:`using_options`)."""
    return dict(_OPTIONS.get())


def filesystem(url: str):
    """``(fsspec filesystem, path within it)`` for ``url``, with the options in force. S3 without credentials
    (none given, none in the environment or a profile) reads anonymously. StorageAccessError when the protocol's
    package is missing."""
    protocol = protocol_of(url)
    try:
        import fsspec
    except ImportError:
        raise StorageAccessError(f"{url}: reading URLs needs fsspec: pip install 'avex-hub[cloud]'") from None
    cache = _FILESYSTEMS.get()
    if protocol not in cache:
        options = current_options()
        try:  # a filesystem of our own (fsspec's shared ones keep listings of earlier runs)
            if protocol in ("s3", "s3a") and not any(k in options for k in _CREDENTIAL_KEYS) and not _aws_credentials():
                options["anon"] = True  # public buckets need no account
            cache[protocol] = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
        except ImportError as error:
            raise StorageAccessError(f"{url}: reading {protocol}:// needs its fsspec package ({error}): pip install "
                                     "'avex-hub[cloud]'") from None
        except Exception as error:  # noqa: BLE001 - an option it does not take or cannot use, an unknown profile
            raise storage_error(error, url, checking=True) from None
    fs = cache[protocol]
    return fs, fsspec.core.strip_protocol(url)


CHECK_TIMEOUT_S = 20  # the most the check before any work waits for the store (the run: the store's own timeouts)


def check_store(url: str) -> None:
    """Ask the store once about ``url``, waiting at most :data:`CHECK_TIMEOUT_S` seconds and retrying nothing:
    StorageAccessError (one line naming what to fix) when the store cannot be used (no answer in time, unreachable,
    an unknown profile, options it cannot use, credentials refused). What the answer says about ``url`` itself (not
    there, not readable) is left to the caller's own request."""
    fs, path = filesystem(check_url(url))
    import fsspec.asyn  # there: filesystem() said so in one line where it is not
    try:
        if getattr(fs, "async_impl", False):  # s3fs, gcsfs, HTTP: the request is cancelled when the time is up
            fsspec.asyn.sync(fs.loop, fs._info, path, timeout=CHECK_TIMEOUT_S)
        else:
            fs.info(path)
    except FileNotFoundError:
        return
    except Exception as error:  # noqa: BLE001 - every store error is turned into one line
        if isinstance(error, fsspec.asyn.FSTimeoutError):
            raise StorageAccessError(f"the storage service for {redact(url)} did not answer within {CHECK_TIMEOUT_S} "
                                     f"s; {_CHECK_OPTIONS}") from None
        problem = storage_error(error, url, checking=True)
        if isinstance(problem, StorageAccessError):
            raise problem from None
        if type(problem) is OSError:  # neither missing nor denied: the service did not answer as a store does
            raise StorageAccessError(f"cannot use the storage service: {problem}; {_CHECK_OPTIONS}") from None


def _aws_credentials() -> bool:
    """Whether botocore finds credentials the standard way (environment, profile, instance role)."""
    try:
        import botocore.session
    except ImportError:
        return False
    return botocore.session.get_session().get_credentials() is not None


def _codes(error: BaseException) -> tuple[list[str], list[str]]:
    """(service error codes, exception class names and those of their base classes) along ``error``'s chain of
    causes."""
    codes, names, seen = [], [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names.extend(cls.__name__ for cls in type(error).__mro__)
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            codes.append(str(response.get("Error", {}).get("Code", "")))
        error = error.__cause__ or error.__context__
    return codes, names


_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ServerDisconnectedError",
                "ConnectionRefusedError", "ClientConnectionError", "ConnectionError", "ReadTimeoutError",
                "TimeoutError", "FSTimeoutError", "ServerTimeoutError", "gaierror")
_MALFORMED = ("TypeError", "AttributeError", "ValueError", "InvalidConfigError")
_CHECK_OPTIONS = ("check the endpoint (endpoint_url in --storage-options, or AWS_ENDPOINT_URL for S3), the bucket "
                  "and the network, then run again")


def storage_error(error: BaseException, url: str, *, writing: bool = False, checking: bool = False,
                  listing: bool = False) -> OSError:
    """``error`` from a store, as one line that names ``url`` and what to fix: StorageAccessError (unreachable,
    credentials refused, a profile or option it cannot use), FileNotFoundError, PermissionError, or an OSError with
    the store's own words. ``writing``: the error came from writing or deleting (a denial asks for write
    permission); ``checking``: from making the filesystem or the check before any work (an exception of the wrong
    type or value there means options it cannot use); ``listing``: from listing a prefix (a bare Not Found, naming no
    missing bucket, is a web server at the endpoint, not a store). The line has passed :func:`redact`: no secret of
    the URL or the options is in it."""
    if isinstance(error, StorageAccessError):
        return StorageAccessError(redact(str(error)))
    codes, names = _codes(error)
    first = redact(str(error).splitlines()[0][:300] if str(error) else type(error).__name__)
    url = redact(url)
    if "ProfileNotFound" in names:
        return StorageAccessError(f"{url}: the AWS profile in use is not configured ({first}); fix AWS_PROFILE or "
                                  "\"profile\" in --storage-options, or name a profile in ~/.aws/config")
    if any(n in _UNREACHABLE for n in names):
        return StorageAccessError(f"cannot reach the storage service for {url} ({first}); {_CHECK_OPTIONS}")
    if "NoCredentialsError" in names:
        return StorageAccessError(f"{url}: no credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY, or give key and secret in --storage-options")
    refused = [c for c in codes if c in _CREDENTIAL_CODES]
    if refused:
        return StorageAccessError(f"{url}: the storage service refused the credentials ({refused[0]}); check "
                                  "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (Google Cloud: "
                                  "GOOGLE_APPLICATION_CREDENTIALS), or key and secret in --storage-options")
    if listing and isinstance(error, FileNotFoundError) and codes and set(codes) <= {"404", "NotFound", ""}:
        return StorageAccessError(f"{url}: the endpoint answered a listing with Not Found and no store's error code, "
                                  "as a web server does and a storage service does not; check endpoint_url in "
                                  "--storage-options (or AWS_ENDPOINT_URL): it should name the storage service")
    if isinstance(error, FileNotFoundError) or "NoSuchKey" in codes or "NoSuchBucket" in codes:
        return FileNotFoundError(f"{url}: not found in the store ({first})")
    if isinstance(error, PermissionError) or any(c in ("AccessDenied", "403", "AllAccessDisabled") for c in codes):
        if writing:
            return PermissionError(f"{url}: access denied ({first}); the credentials in use may not write there: "
                                   "ask for write (and delete) permission on it, or choose another --out")
        return PermissionError(f"{url}: access denied ({first}); the credentials in use are wrong or may not read "
                               "it: check AWS_PROFILE / AWS_ACCESS_KEY_ID (or key and secret in --storage-options), or "
                               "ask for read and list permission on it (anonymous reads work for public buckets "
                               "only)")
    if "support range requests" in first:  # fsspec's HTTP file, when the server answers a range with everything
        return OSError(f"{url}: the server does not serve byte ranges (it answered a ranged request with the whole "
                       "file), so the file cannot be streamed from it; download it and give the local path")
    if "ParamValidationError" in names:  # botocore's check of the request: the bucket or key name, not an option
        detail = redact(" ".join(str(error).split())[:300])
        return StorageAccessError(f"{url}: not a bucket or key name the store takes ({detail}); check the URL")
    if isinstance(error, TypeError) or (checking and names[0] in _MALFORMED):  # an option not taken, of a wrong type
        return StorageAccessError(f"--storage-options: the filesystem for {url} cannot use the options given "
                                  f"({type(error).__name__}: {first}); see its documentation for the arguments it "
                                  "takes and their types")
    return OSError(f"{url}: {type(error).__name__}: {first}")
