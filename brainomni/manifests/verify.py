"""Verifying a published manifest: its content hash, then every shard's sha256, byte count,
sample count and every sample, with the loader's own check
(:func:`brainomni.formats.sample.iter_samples`), streaming each shard once. A store that
cannot be read (unreachable past the retry window, or refusing access) ends the check with
a storage error instead of a verdict on the shards left.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from typing import Any

from ..formats.manifest import content_hash, manifest_kind
from ..formats.sample import count_samples
from ..io.fs import get_fs, join_url
from ..io.redact import redact
from ..io.retry import retry


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    storage_error: str = ""  # the store could not be read: the shards left are unchecked
    storage_refused: bool = False  # ... because it refused access (else: unreachable)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.storage_error


class _HashingReader:
    def __init__(self, fh: Any) -> None:
        self.fh, self.sha, self.n = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.fh.read(n)
        self.sha.update(b)
        self.n += len(b)
        return b


def scan_shard(
    url: str, storage_options: dict | None = None, schema: str = "raw"
) -> tuple[str, int, int]:
    """``(sha256, bytes, samples)`` of one shard, streaming once.

    Every sample passes the loader's own check
    (:func:`brainomni.formats.sample.iter_samples`: member names, dtypes, shapes, sizes),
    so ``verify`` accepts exactly the shards the loader reads; signals are skipped in
    bounded chunks, never held whole.
    """
    fs, path = get_fs(url, storage_options)
    fs.invalidate_cache(path)
    with fs.open(path, "rb") as fh:
        hr = _HashingReader(fh)
        samples = count_samples(hr, schema, where=redact(url))
        while hr.read(1 << 20):
            pass
    return hr.sha.hexdigest(), hr.n, samples


class _StoreError(Exception):
    """The object store could not be read (unreachable past the retry window, or refused)."""

    def __init__(self, line: str, refused: bool) -> None:
        super().__init__(line)
        self.refused = refused


def _scan_or_storage_error(
    url: str, storage_options: dict | None, schema: Any = None
) -> tuple[str, int, int]:
    """:func:`scan_shard` with transient errors retried; storage failures as :class:`_StoreError`."""
    from ..io.retry import EXIT_STORAGE_REFUSED, storage_failure

    try:
        return retry(lambda: scan_shard(url, storage_options, schema), what=f"verify {url}")
    except Exception as exc:
        found = storage_failure(exc)
        if found is None:
            raise
        raise _StoreError(found[1], refused=found[0] == EXIT_STORAGE_REFUSED) from exc


def verify(manifest: dict[str, Any], storage_options: dict | None = None) -> VerifyReport:
    """Check the content hash, then every shard's sha256, byte count, sample count and every
    sample (the loader's check)."""
    rep = VerifyReport()
    if content_hash(manifest) != manifest.get("content_hash"):
        rep.problems.append("manifest content_hash does not match its content (edited?)")
    schema = manifest_kind(manifest)  # the sample schema of its shards
    for s in manifest["shards"]:
        rep.checked += 1
        url = join_url(manifest["shards_root"], s["path"])
        try:
            sha, n, samples = _scan_or_storage_error(url, storage_options, schema)
        except _StoreError as exc:  # no verdict on the shard; the rest would fail the same way
            rep.checked -= 1
            rep.storage_error, rep.storage_refused = f"{s['path']}: {exc}", exc.refused
            break
        except FileNotFoundError:
            rep.problems.append(f"{s['path']}: missing")
            continue
        except (tarfile.TarError, EOFError, ValueError, OSError) as exc:
            rep.problems.append(f"{s['path']}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if n != s["bytes"]:
            rep.problems.append(f"{s['path']}: {n} bytes, manifest says {s['bytes']}")
        if sha != s["sha256"]:
            rep.problems.append(f"{s['path']}: sha256 mismatch")
        if samples != s["samples"]:
            rep.problems.append(f"{s['path']}: {samples} samples, manifest says {s['samples']}")
    return rep


__all__ = ["VerifyReport", "scan_shard", "verify"]
