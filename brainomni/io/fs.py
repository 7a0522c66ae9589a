"""Filesystems over fsspec: open any URL, validate keys, keep credentials out of options.

Endpoints and credentials come only from the standard AWS configuration: the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``) or ``~/.aws/config``. ``storage_options``
may name an endpoint, a profile or ``anon=True`` (public buckets such as ``s3://openneuro.org``)
but never a key or secret. Everything that goes into a log line or an error message passes
through :func:`brainomni.io.redact.redact`. Writes that must appear whole go through
:mod:`brainomni.io.commit`; transient errors are retried by :mod:`brainomni.io.retry`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .redact import redact
from .retry import retry

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


# --------------------------------------------------------------------------- reading


def iter_chunks(fh: Any, size: int = 1 << 20) -> Iterator[bytes]:
    """Read an open binary file in ``size``-byte chunks."""
    while chunk := fh.read(size):
        yield chunk


def read_json(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The JSON document at ``url`` (listing caches bypassed), or ``None`` when absent."""
    fs, path = get_fs(url, storage_options)
    fs.invalidate_cache(path)
    try:
        return json.loads(retry(lambda: fs.cat_file(path), what=f"read {url}"))
    except FileNotFoundError:
        return None


__all__ = [
    "check_storage_options",
    "get_fs",
    "is_local",
    "iter_chunks",
    "join_url",
    "read_json",
    "s3_options",
    "safe_key",
    "to_url",
]
