"""Storage helpers over fsspec: open any URL, write atomically, commit stores, retry narrowly.

Endpoints and credentials come only from the standard AWS configuration: the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``) or ``~/.aws/config``. ``storage_options``
may name an endpoint, a profile or ``anon=True`` (public buckets such as ``s3://openneuro.org``)
but never a key or secret. Everything that goes into a log line or an error message passes
through :func:`redact`.

Store commit protocol (see :class:`DirectoryCommit`): a store at ``ROOT/KEY`` is written
under ``ROOT/.tmp/<uuid>/`` first and exists only once ``ROOT/KEY/_COMPLETE`` is present.
The marker is JSON (source checksum, config hash, file list with sizes) and is written last:

* local disk: the marker is written inside the staging folder, which is then renamed onto
  ``ROOT/KEY`` in one ``os.rename`` (atomic on one filesystem);
* object stores (no rename): any old marker is deleted first, then stale objects under
  ``ROOT/KEY/``, then the staged objects are copied over, then the marker is written (one
  PUT, atomic), then the staging prefix is deleted.

A job killed at any point leaves either the previous complete store or a prefix without a
marker, which readers treat as absent and the next commit replaces. Orphaned staging
folders are removed by :func:`clean_staging`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import logging
import os
import random
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

MARKER_NAME = "_COMPLETE"
MARKER_FORMAT = "brainomni.complete/1"
STAGING_DIR = ".tmp"

_CREDENTIAL_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key",
        "secret_key",
        "session_token",
    }
)
_SECRET_KEY_RE = re.compile(r"(key|secret|token|password|passwd|credential|signature|auth)", re.I)
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET_RE = re.compile(
    r"(?P<k>[?&](?:X-Amz-(?:Signature|Credential|Security-Token)|AWSAccessKeyId|Signature|"
    r"sig|token|access_token|key|secret))=[^&\s]*",
    re.I,
)
# Credentials as botocore, s3fs and HTTP libraries print them in DEBUG logs and errors:
# header dumps ('Authorization': b'AWS4-HMAC-SHA256 Credential=AKID/..., Signature=...',
# 'X-Amz-Security-Token': b'...'), canonical requests (x-amz-security-token:VALUE), STS and
# instance-metadata responses ("SecretAccessKey": "...", <SessionToken>...</SessionToken>),
# config-style lines (aws_secret_access_key = ...) and AWS key id shapes.
_HEADER_SECRET_RE = re.compile(
    r"(?P<k>\b(?:authorization|proxy-authorization|x-amz-security-token|x-amz-credential|"
    r"x-amz-signature)\b['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n&]+",
    re.I,
)
_CREDENTIAL_PARAM_RE = re.compile(r"(?P<k>\b(?:Credential|Signature)=)[^&\s,'\"]+", re.I)
_FIELD_SECRET_RE = re.compile(
    r"(?P<k>['\"]?\b(?:AccessKeyId|SecretAccessKey|SessionToken|(?-i:Token)|aws_access_key_id|"
    r"aws_secret_access_key|aws_session_token|aws_security_token)\b['\"]?\s*[:=]\s*b?['\"]?)"
    r"[^'\"\s,<}&]+",
    re.I,
)
_XML_SECRET_RE = re.compile(
    r"<(?P<t>AccessKeyId|SecretAccessKey|SessionToken|Token)>[^<]*</(?P=t)>", re.I
)
_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{12,}\b")
REDACTED = "***"
_EXTRA_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Also redact this literal value everywhere (e.g. a token obtained at run time)."""
    if isinstance(value, str) and len(value) >= 4:
        _EXTRA_SECRETS.add(value)


# --------------------------------------------------------------------------- redaction


def redact(obj: Any) -> Any:
    """A copy of ``obj`` safe to log: credentials in URLs, mappings and text replaced.

    Strings lose URL user-info (``s3://KEY:SECRET@bucket``), signed-URL query parameters,
    ``Authorization``/``X-Amz-Security-Token``/``X-Amz-Credential`` header values, credential
    fields of STS/metadata responses, AWS access key ids, and any literal value of
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` from the environment
    (or given to :func:`register_secret`). Mappings lose the values of credential-like keys (recursively).
    """
    if isinstance(obj, str):
        text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{REDACTED}@", obj)
        text = _QUERY_SECRET_RE.sub(lambda m: f"{m['k']}={REDACTED}", text)
        text = _HEADER_SECRET_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _CREDENTIAL_PARAM_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _FIELD_SECRET_RE.sub(lambda m: f"{m['k']}{REDACTED}", text)
        text = _XML_SECRET_RE.sub(lambda m: f"<{m['t']}>{REDACTED}</{m['t']}>", text)
        text = _KEY_ID_RE.sub(REDACTED, text)
        values = [os.environ.get(var) for var in _SECRET_ENV] + sorted(_EXTRA_SECRETS)
        for value in values:
            if value and len(value) >= 4:
                text = text.replace(value, REDACTED)
        return text
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY_RE.search(k) else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    return obj


def describe_error(exc: BaseException) -> str:
    """``"ClassName: message"`` with credentials redacted (for ledgers and logs)."""
    return redact(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- filesystems


def check_storage_options(storage_options: Mapping[str, Any]) -> None:
    """``ValueError`` when ``storage_options`` carry a key, secret or token (names only)."""
    bad = sorted(k for k in storage_options if k.lower() in _CREDENTIAL_OPTIONS)
    bad += [
        f"client_kwargs.{k}"
        for k in storage_options.get("client_kwargs", {}) or {}
        if k.lower() in _CREDENTIAL_OPTIONS
    ]
    if bad:
        raise ValueError(
            f"storage_options must not carry credentials (got {', '.join(bad)}); set them in "
            "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or an AWS profile "
            "(storage_options={'profile': NAME}) instead"
        )


def s3_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """s3fs keyword arguments: ``storage_options`` plus the endpoint from the environment.

    ``endpoint_url`` (top level or in ``client_kwargs``) wins over ``AWS_ENDPOINT_URL_S3``,
    which wins over ``AWS_ENDPOINT_URL``.
    """
    opts = dict(storage_options or {})
    check_storage_options(opts)
    client_kwargs = dict(opts.pop("client_kwargs", None) or {})
    endpoint = opts.pop("endpoint_url", None) or client_kwargs.pop("endpoint_url", None)
    endpoint = (
        endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        opts["endpoint_url"] = endpoint
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    return opts


def get_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` for a local path or any fsspec URL.

    ``path`` is in the filesystem's own convention (no protocol for s3, absolute for local).
    Raises ``ValueError`` when ``storage_options`` carry credentials.
    """
    import fsspec

    opts = dict(storage_options or {})
    check_storage_options(opts)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        opts = s3_options(opts)
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path.rstrip("/") or path


def is_local(fs: Any) -> bool:
    """True for fsspec's local filesystem."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def to_url(fs: Any, path: str) -> str:
    """The URL of ``path`` on ``fs``: a plain absolute path for local disk, else ``proto://``."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def join_url(root: str, *keys: str) -> str:
    """``root/key/...`` after validating each key with :func:`safe_key`."""
    parts = [root.rstrip("/")] + [safe_key(k) for k in keys if k]
    return "/".join(parts)


def safe_key(key: str) -> str:
    """A relative object key, normalised; ``ValueError`` for ``..``, absolute or URL keys."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError("a storage key must be a non-empty relative path")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"storage key {redact(key)!r} contains a NUL or a backslash")
    if "://" in key or key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise ValueError(f"storage key {redact(key)!r} must be relative, not absolute or a URL")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"storage key {redact(key)!r} must not contain '..'")
    if not parts:
        raise ValueError(f"storage key {key!r} is empty after normalisation")
    return "/".join(parts)


# --------------------------------------------------------------------------- retries

RETRY_ENV = "BRAINOMNI_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 180.0  # seconds: the window a transient outage may last before work fails


class StorageUnavailable(ConnectionError):
    """The object store stayed unreachable (or kept failing transiently) for the whole retry
    window. A ``ConnectionError`` (hence ``OSError``), so existing ``except OSError`` still
    catches it; ingest turns it into a ``failed`` row with this class name."""


_TRANSIENT_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "HTTPClientError",
        "ProxyConnectionError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "ClientOSError",
        "FSTimeoutError",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestThrottled",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.EPIPE,
        errno.EAGAIN,
    }
)
# Errors that retrying cannot fix: the request reached the store and was refused, or the
# configuration is wrong (credentials, profile, TLS, a host name that does not resolve).
_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AccountProblem",
        "InvalidSecurity",
        "UnrecognizedClientException",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)
_REFUSED_NAMES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "ProfileNotFound",
        "ConfigNotFound",
        "InvalidConfigError",
        "UnauthorizedSSOTokenError",
        "SSOTokenLoadError",
        "TokenRetrievalError",
        "SSLError",
        "SSLCertVerificationError",
        "ClientConnectorCertificateError",
        "InvalidEndpointConfigurationError",
    }
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes/contexts (s3fs and botocore wrap the original error)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not e for e in out):
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _response(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    code = str((response.get("Error") or {}).get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def _is_refused_one(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError):
        return True
    if any(cls.__name__ in _REFUSED_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
        return True  # a host name that does not resolve: a wrong endpoint, not an outage
    code, status = _response(exc)
    return code in _REFUSED_CODES or status in (401, 403)


def _is_transient_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    code, status = _response(exc)
    if code in _TRANSIENT_CODES or code in ("500", "502", "503", "504", "429"):
        return True
    if status is not None and (status >= 500 or status == 429):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def is_refused(exc: BaseException) -> bool:
    """True when the store (or the local configuration) refused access: credentials,
    permissions, profile, TLS, an unresolvable endpoint host. Never worth a retry."""
    return any(_is_refused_one(e) for e in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """True for object-store errors worth retrying: connection refused/reset/closed, timeouts,
    HTTP 5xx and 429, throttling (SlowDown, Throttling...).

    s3fs turns botocore errors into ``OSError`` subclasses and keeps the original as
    ``__cause__``, so the whole cause chain is inspected. Refusals (see :func:`is_refused`:
    401/403, bad or missing credentials, unresolvable host), not-found and decoding errors
    are permanent, even when wrapped in an error that looks transient.
    """
    chain = _chain(exc)
    if any(
        isinstance(e, (FileNotFoundError, IsADirectoryError)) or _is_refused_one(e) for e in chain
    ):
        return False
    return any(_is_transient_one(e) for e in chain)


def _env_retry_s() -> float:
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(
            f"{RETRY_ENV}={raw!r} is not a number of seconds >= 0; set it to e.g. 180 "
            "(the retry window for object-store outages) or unset it"
        )
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry transient errors for up to ``total_s`` seconds (the retry window), with
    exponential backoff and equal jitter: after failed try ``n`` it sleeps between half and
    all of ``min(max_delay, base_delay * 2**n)``, never past the window's end; the last try
    is made at the end of the window.

    ``total_s`` defaults to ``$BRAINOMNI_STORAGE_RETRY_S`` (else 180 s). ``attempts``
    optionally caps the number of tries as well (``None``: only the window counts).
    """

    total_s: float = field(default_factory=_env_retry_s)
    base_delay: float = 0.5  # seconds
    max_delay: float = 30.0  # seconds, cap on one sleep
    attempts: int | None = None  # total tries, the first included

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1 or None, got {self.attempts}")
        if not self.total_s >= 0:
            raise ValueError(f"RetryPolicy.total_s must be >= 0 seconds, got {self.total_s}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("RetryPolicy needs 0 <= base_delay <= max_delay")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed try number ``attempt`` (0-based), before the cap
        by the window's end."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(attempt, 64)))
        return ceiling / 2 + (rng or random).uniform(0.0, ceiling / 2)


# The retry clock: module attributes so that tests can run the same logic on a virtual
# clock (``monkeypatch.setattr(storage, "_now", ...)``, ``..., "_sleep", ...``).
_now: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep
# The deadline of the retry call this one runs inside (nested retries share one window).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "brainomni_storage_deadline", default=None
)


def retry(
    fn: Callable[[], T],
    policy: RetryPolicy | None = None,
    *,
    what: str = "",
    sleep: Callable[[float], None] | None = None,
    classify: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fn()``; on a transient error (see :func:`is_transient`) retry with backoff.

    A permanent error propagates at once. The window (``policy.total_s``) starts at the first
    failed try: an outage shorter than the window ends in success, however long ``fn`` ran
    before it. When the window is spent (or ``policy.attempts`` tries are made),
    :class:`StorageUnavailable` is raised from the last error. Nested calls share one
    window: a retry inside ``fn`` ends no later than this one, and a
    :class:`StorageUnavailable` raised inside ``fn`` propagates without a second window.
    ``what`` names the operation in log lines (redacted).
    """
    policy = policy or RetryPolicy()
    pause_fn = sleep or _sleep
    outer = _DEADLINE.get()
    label = redact(what) or "storage call"
    first: float | None = None  # time of the first failure
    deadline: float | None = outer
    tries = 0
    while True:
        token = _DEADLINE.set(deadline)
        try:
            return fn()
        except StorageUnavailable:
            raise  # a retry inside fn already waited a whole window for this outage
        except Exception as exc:
            if not classify(exc):
                raise
            tries += 1
            now = _now()
            if first is None:
                first = now
                own = now + policy.total_s
                deadline = own if outer is None else min(own, outer)
            left = deadline - now
            if left <= 0 or (policy.attempts is not None and tries >= policy.attempts):
                raise StorageUnavailable(
                    f"object storage unavailable for {now - first:.0f} s ({tries} tries) "
                    f"on {label}: {describe_error(exc)}. Fix: check the endpoint "
                    f"({endpoint_description()}) and the network, or rerun later; the retry window is "
                    f"{policy.total_s:g} s (${RETRY_ENV} or --storage-retry-s)"
                ) from exc
            pause = min(policy.delay(tries - 1), left)
            logger.warning(
                "transient storage error on %s (try %d, %.0f s of the %g s window left), "
                "retrying in %.2fs: %s",
                label,
                tries,
                left,
                policy.total_s,
                pause,
                describe_error(exc),
            )
        finally:
            _DEADLINE.reset(token)
        pause_fn(pause)


def endpoint_description(storage_options: Mapping[str, Any] | None = None) -> str:
    """The S3 endpoint in use, for messages: options, then the environment, else AWS."""
    so = dict(storage_options or {})
    url = (
        so.get("endpoint_url")
        or (so.get("client_kwargs") or {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    return redact(str(url)) if url else "AWS S3 (no AWS_ENDPOINT_URL set)"


# --------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(
    url: str, data: bytes, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``data`` to ``url`` so that readers see the old object or the whole new one.

    Local disk: a temporary file in the same folder, fsynced, then ``os.replace``. Object
    stores: one PUT, which S3-compatible stores publish atomically. Transient errors retry.
    """
    fs, path = get_fs(url, storage_options)
    if is_local(fs):
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    retry(lambda: fs.pipe_file(path, data), what=f"write {url}")


# --------------------------------------------------------------------------- store commits


def read_marker(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``_COMPLETE`` marker of the store at ``url``, or ``None`` when it is not complete."""
    fs, path = get_fs(url, storage_options)
    marker = f"{path}/{MARKER_NAME}"
    fs.invalidate_cache(marker)
    try:
        raw = retry(lambda: fs.cat_file(marker), what=f"read {url}/{MARKER_NAME}")
    except FileNotFoundError:
        return None
    return json.loads(raw)


def is_complete(
    url: str,
    *,
    source_checksum: str | None = None,
    config_hash: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """True when the store at ``url`` has a marker matching the given checksum and config hash."""
    marker = read_marker(url, storage_options)
    if marker is None:
        return False
    if source_checksum is not None and marker.get("source_checksum") != source_checksum:
        return False
    return config_hash is None or marker.get("config_hash") == config_hash


@dataclass(slots=True)
class Staged:
    """Where a writer puts a store's files before commit (``url`` for fsspec/zarr, or fs+path)."""

    fs: Any
    path: str
    url: str


class DirectoryCommit:
    """Write a folder-shaped store under ``ROOT/.tmp/<uuid>/`` and publish it at ``ROOT/KEY``.

    Usage::

        with DirectoryCommit(root, key, source_checksum=c, config_hash=h) as staged:
            write_store(staged.url)            # any number of files under staged.url
        # committed here; on an exception the staging folder is removed and nothing published

    ``meta`` adds JSON-serialisable fields to the marker. See the module docstring for the
    protocol and its crash guarantees.
    """

    def __init__(
        self,
        root: str,
        key: str,
        *,
        source_checksum: str | None,
        config_hash: str,
        meta: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self.key = safe_key(key)
        self.source_checksum = source_checksum
        self.config_hash = config_hash
        self.meta = dict(meta or {})
        self.storage_options = dict(storage_options or {})
        self.fs, self.root_path = get_fs(self.root, self.storage_options)
        self.final_path = f"{self.root_path}/{self.key}"
        self.staging_path = f"{self.root_path}/{STAGING_DIR}/{uuid.uuid4().hex}"
        self.marker: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        """URL of the committed store."""
        return to_url(self.fs, self.final_path)

    def __enter__(self) -> Staged:
        self.fs.makedirs(self.staging_path, exist_ok=True)
        return Staged(self.fs, self.staging_path, to_url(self.fs, self.staging_path))

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        try:
            if et is None:
                self._commit()
        finally:
            self._remove(self.staging_path)

    def _files(self) -> dict[str, int]:
        self.fs.invalidate_cache(self.staging_path)
        found = retry(lambda: self.fs.find(self.staging_path, detail=True), what="list staging")
        prefix = self.staging_path.rstrip("/") + "/"
        return {
            p[len(prefix) :]: int(info.get("size") or 0)
            for p, info in sorted(found.items())
            if info.get("type") != "directory" and p.startswith(prefix)
        }

    def _marker_bytes(self, files: dict[str, int]) -> bytes:
        self.marker = {
            "format": MARKER_FORMAT,
            "key": self.key,
            "source_checksum": self.source_checksum,
            "config_hash": self.config_hash,
            "files": files,
            "n_files": len(files),
            "bytes": sum(files.values()),
            "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.meta,
        }
        return json.dumps(self.marker, sort_keys=True, indent=1).encode()

    def _remove(self, path: str) -> None:
        if retry(lambda: self.fs.exists(path), what="exists"):
            retry(lambda: self.fs.rm(path, recursive=True), what=f"remove {self.key}")

    def _commit(self) -> None:
        files = self._files()
        if MARKER_NAME in files:
            raise ValueError(f"a store must not write its own {MARKER_NAME} file")
        body = self._marker_bytes(files)
        final_marker = f"{self.final_path}/{MARKER_NAME}"
        self.fs.invalidate_cache(self.final_path)
        if is_local(self.fs):
            atomic_write_bytes(f"{self.staging_path}/{MARKER_NAME}", body)
            if os.path.lexists(self.final_path):
                # A previous (complete or partial) store: unpublish the marker first.
                with contextlib.suppress(OSError):
                    os.unlink(final_marker)
                import shutil

                shutil.rmtree(self.final_path)
            os.makedirs(os.path.dirname(self.final_path), exist_ok=True)
            os.rename(self.staging_path, self.final_path)
        else:
            if retry(lambda: self.fs.exists(final_marker), what="exists"):
                retry(lambda: self.fs.rm_file(final_marker), what="unpublish marker")
            self._remove(self.final_path)
            for rel in files:
                src, dst = f"{self.staging_path}/{rel}", f"{self.final_path}/{rel}"
                retry(lambda s=src, d=dst: self.fs.copy(s, d), what=f"copy {rel}")
            atomic_write_bytes(to_url(self.fs, final_marker), body, self.storage_options)
        logger.info(
            "committed %s (%d files, %d bytes)", redact(self.url), len(files), sum(files.values())
        )


def clean_staging(
    root: str,
    *,
    older_than_s: float = 24 * 3600,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Remove staging folders under ``ROOT/.tmp/`` older than ``older_than_s``; their paths.

    Object stores keep no folder times, so the age is that of the newest object inside.
    Call it only when no writer that started within ``older_than_s`` may still be running.
    """
    fs, root_path = get_fs(root, storage_options)
    base = f"{root_path}/{STAGING_DIR}"
    if not fs.exists(base):
        return []
    now, removed = time.time(), []
    for entry in fs.ls(base, detail=True):
        name = entry["name"]
        mtimes = [_mtime(i) for i in fs.find(name, detail=True).values()] or [_mtime(entry)]
        if now - max(mtimes) >= older_than_s:
            fs.rm(name, recursive=True)
            removed.append(to_url(fs, name))
    return removed


def _mtime(info: Mapping[str, Any]) -> float:
    value = next(
        (info[k] for k in ("mtime", "LastModified", "created") if info.get(k) is not None), 0
    )
    return value.timestamp() if isinstance(value, datetime) else float(value)


def iter_chunks(fh: Any, size: int = 1 << 20) -> Iterator[bytes]:
    """Read an open binary file in ``size``-byte chunks."""
    while chunk := fh.read(size):
        yield chunk


def read_json(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON document at ``url`` (listing caches bypassed), or ``None`` when absent."""
    import json

    fs, path = get_fs(url, storage_options)
    fs.invalidate_cache(path)
    try:
        return json.loads(retry(lambda: fs.cat_file(path), what=f"read {url}"))
    except FileNotFoundError:
        return None
