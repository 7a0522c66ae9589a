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
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .redaction import REDACTED, describe_error, redact, register_secret  # noqa: F401
from .retries import (  # noqa: F401  (re-exported: the storage API)
    DEFAULT_RETRY_S,
    RETRY_ENV,
    RetryPolicy,
    StorageUnavailable,
    endpoint_description,
    is_refused,
    is_transient,
    retry,
)

logger = logging.getLogger(__name__)


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
