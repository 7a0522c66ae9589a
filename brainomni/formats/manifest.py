"""The manifest format: one JSON document listing a corpus version's shards, two kinds.

* ``brainomni.manifest/1``: signal shards (``brainomni pack`` + ``brainomni publish``);
* ``brainomni.token-manifest/1``: token shards (``brainomni tokenize`` writes
  ``DEST/manifest.json``; ``brainomni publish`` publishes it under a name and version).

Both carry ``shards_root`` and ``shards`` (``path``, ``split``, ``sha256``, ``bytes``,
``samples``) and a ``content_hash``: the sha256 of the canonical JSON (sorted keys, no
whitespace) of everything except ``created_at`` and ``content_hash`` itself
(:func:`content_hash`, the only implementation). A manifest file is
:func:`manifest_bytes` (sorted keys, indent 1, a final newline), and every reader goes
through :func:`read_manifest` (size bounded before reading, format and shard list checked).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "brainomni.manifest/1"
TOKEN_MANIFEST_FORMAT = "brainomni.token-manifest/1"
FORMATS = (MANIFEST_FORMAT, TOKEN_MANIFEST_FORMAT)
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024  # ~1M shard entries
_UNHASHED = ("created_at", "content_hash")


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def content_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of everything but ``created_at`` and ``content_hash``."""
    body = {k: v for k, v in manifest.items() if k not in _UNHASHED}
    return hashlib.sha256(canonical(body)).hexdigest()


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes of a manifest file."""
    return json.dumps(dict(manifest), sort_keys=True, indent=1).encode() + b"\n"


def manifest_kind(manifest: Mapping[str, Any]) -> str:
    """``tokens`` for a token manifest, else ``raw``: the sample schema of its shards
    (:data:`brainomni.formats.sample.SCHEMAS`)."""
    return "tokens" if manifest.get("format") == TOKEN_MANIFEST_FORMAT else "raw"


def read_manifest(
    src: str | Path | Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    *,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Any]:
    """A manifest from a path or URL (or the dict itself), either kind unless ``formats``
    narrows it. ``ValueError`` naming the source for anything that is not one: over
    :data:`MAX_MANIFEST_BYTES`, not a JSON object, another format, a malformed shard list.
    The content hash is checked by ``verify``, not here (an edited manifest still loads)."""
    if isinstance(src, Mapping):
        m, where = dict(src), "manifest"
    else:
        from ..io.fs import get_fs
        from ..io.redact import redact
        from ..io.retry import retry

        where = redact(str(src))
        fs, path = get_fs(str(src), storage_options)
        fs.invalidate_cache(path)
        size = retry(lambda: fs.size(path), what=f"stat {where}")
        if size is not None and size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{where}: {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
        raw = retry(lambda: fs.cat_file(path), what=f"read {where}")
        try:
            m = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{where} is not a JSON manifest ({type(exc).__name__})") from None
    if not isinstance(m, dict) or m.get("format") not in formats:
        found = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise ValueError(
            f"{where!s:.200} is not a manifest (format {found!r}; expected one of {formats})"
        )
    shards = m.get("shards")
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and isinstance(s.get("split"), str) for s in shards
    ):
        raise ValueError(f"{where!s:.200}: 'shards' must be a list of objects with a split")
    if not isinstance(m.get("shards_root"), str):
        raise ValueError(f"{where!s:.200}: 'shards_root' must be a string")
    return m


def write_manifest(
    url: str, manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write a manifest file atomically (:func:`brainomni.io.commit.atomic_write_bytes`)."""
    from ..io.commit import atomic_write_bytes

    atomic_write_bytes(url, manifest_bytes(manifest), storage_options)


__all__ = [
    "FORMATS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "TOKEN_MANIFEST_FORMAT",
    "canonical",
    "content_hash",
    "manifest_bytes",
    "manifest_kind",
    "read_manifest",
    "write_manifest",
]
