"""The one commit protocol: how everything that must appear whole is published.

Readers see the previous version or the whole new one, never a part. Two shapes:

* **a file** (:func:`atomic_write_bytes`, :class:`AtomicFile`, :func:`staged_path`; and
  :func:`claim` for what is immutable once published: an exclusive create): on local
  disk it is written to its staging sibling ``.<name>.tmp-<8 hex>`` in the same folder,
  fsynced and renamed onto its name (``os.replace``: atomic on one filesystem); on an object
  store it is one PUT (a streamed file is spooled to a local temporary file and uploaded with
  one ``put_file``), which S3-compatible stores publish atomically. Used by shards and their
  indexes, token shards, manifests, ledgers, plans and checkpoint metadata.
* **a folder** (:class:`DirectoryCommit`: a Zarr recording store): it exists only once its
  ``_COMPLETE`` marker (JSON) is there, and the marker is written last. Local disk: the
  folder is written as the staging sibling ``.<name>.tmp-<8 hex>``, the marker is written
  inside it, the old folder (if any) is renamed aside (``<staging>.old``) and the staging
  folder renamed onto the name. Object stores (no rename): the old marker is deleted first,
  then the old objects; the new objects are written in place and the marker last (one PUT).

A job killed at any point leaves the previous complete version, a staging sibling (local
disk) or a prefix without a marker (object stores), which readers treat as absent
(:func:`read_marker`, :func:`is_complete`) and the next commit replaces. Staging siblings a
killed job left are removed by :func:`clean_staging` (all under a root, by age) or
:func:`remove_staging` (one name's, when its writer is known to be gone).

Size: a little over 400 lines: the file and folder shapes, the staging names and the cleanup
of leftovers are one protocol (the cleanup must recognise exactly the names the writers
stage), so they stay in one module.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from .fs import get_fs, is_local, to_url
from .redact import redact
from .retry import StorageUnavailable, retry

log = logging.getLogger(__name__)

MARKER_NAME = "_COMPLETE"
_STAGING_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}(\.old)?$")


# --------------------------------------------------------------------------- staging names


def staging_path(path: str) -> str:
    """A fresh staging sibling of local ``path``: ``<folder>/.<name>.tmp-<8 hex>``."""
    folder, name = os.path.split(path.rstrip("/"))
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def staging_glob(name: str) -> str:
    """The glob pattern (in ``name``'s folder) of ``name``'s staging siblings."""
    return f".{glob.escape(name)}.tmp-*"


def is_staging(name: str) -> bool:
    """True for a staging sibling's base name (``.<name>.tmp-<8 hex>[.old]``)."""
    return bool(_STAGING_RE.match(name))


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------- files


class AtomicFile:
    """A binary file that appears at ``url`` whole on a clean exit, and not at all otherwise.

    ::

        with AtomicFile(url, storage_options) as fh:
            fh.write(...)          # any number of writes (tarfile, webdataset's TarWriter)
            if nothing_worth_it:
                fh.discard()       # nothing is published

    ``temp``: the local path of the temporary file (default: the staging sibling on local
    disk, a file under the system temp folder for object stores); a caller that sweeps its
    own leftovers by name passes one. It must be on ``url``'s filesystem for local disk.
    ``bytes`` counts what was written; with ``sha256=True``, :meth:`hexdigest` is the
    sha256 of it, computed as it streams (nothing is read back).
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        temp: str | None = None,
        sha256: bool = False,
    ) -> None:
        self.url = url
        self.storage_options = storage_options
        self.fs, self.path = get_fs(url, storage_options)
        self.local = is_local(self.fs)
        if temp is None and self.local:
            temp = staging_path(self.path)
        self._temp = temp
        self._fh: Any = None
        self._discarded = False
        self._sha = hashlib.sha256() if sha256 else None
        self.bytes = 0

    def __enter__(self) -> AtomicFile:
        if self._temp is None:
            fd, self._temp = tempfile.mkstemp(prefix="brainomni-upload-")
        else:
            os.makedirs(os.path.dirname(self._temp) or ".", exist_ok=True)
            # 0o666 less the umask, as a plain open() would create it
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._fh = os.fdopen(fd, "wb")
        return self

    def write(self, b: bytes) -> int:
        if self._sha is not None:
            self._sha.update(b)
        self.bytes += len(b)
        return self._fh.write(b)

    def hexdigest(self) -> str:
        if self._sha is None:
            raise ValueError("AtomicFile(..., sha256=True) hashes what it writes")
        return self._sha.hexdigest()

    def flush(self) -> None:
        self._fh.flush()

    def discard(self) -> None:
        """Publish nothing when the block ends."""
        self._discarded = True

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        temp = self._temp
        try:
            self._fh.flush()
            if et is None and not self._discarded:
                os.fsync(self._fh.fileno())
            self._fh.close()
            if et is not None or self._discarded:
                return
            if self.local:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                os.replace(temp, self.path)
                _fsync_dir(os.path.dirname(self.path))
            else:
                retry(lambda: self.fs.put_file(temp, self.path), what=f"upload {self.url}")
        finally:
            if not self._fh.closed:
                self._fh.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def atomic_write_bytes(
    url: str, data: bytes, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``data`` to ``url`` so that readers see the old object or the whole new one
    (local disk: staging sibling, fsync, rename; object stores: one PUT, retried)."""
    fs, path = get_fs(url, storage_options)
    if not is_local(fs):
        retry(lambda: fs.pipe_file(path, data), what=f"write {redact(url)}")
        return
    with AtomicFile(url, storage_options) as fh:
        fh.write(data)


@contextlib.contextmanager
def staged_path(path: str | os.PathLike) -> Iterator[str]:
    """For libraries that write by file name (safetensors, ``torch.save``): yields the local
    staging path to write; renamed onto ``path`` on a clean exit, removed otherwise."""
    final = os.fspath(path)
    temp = staging_path(final)
    try:
        yield temp
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, final)
        _fsync_dir(os.path.dirname(final))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def claim(src: str | os.PathLike, target: str | os.PathLike) -> None:
    """Publish local ``src``'s bytes at ``target`` only if ``target`` does not exist yet
    (``FileExistsError`` otherwise): an exclusive hard link, atomic (the file appears whole
    or not at all), or an exclusive create where the filesystem has no hard links. For what
    is immutable once published (a manifest version)."""
    try:
        os.link(src, target)
        _fsync_dir(os.path.dirname(os.fspath(target)))
        return
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links: exclusive create instead
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh, open(src, "rb") as inp:
        shutil.copyfileobj(inp, fh)
        fh.flush()
        os.fsync(fh.fileno())


def move_into(files: list[str | os.PathLike], folder: str | os.PathLike) -> None:
    """Rename finished local ``files`` into ``folder`` (same filesystem), each atomically
    replacing its namesake (a published card's files)."""
    for f in files:
        os.replace(f, os.path.join(folder, os.path.basename(os.fspath(f))))
    _fsync_dir(os.fspath(folder))


# --------------------------------------------------------------------------- folders


class DirectoryCommit:
    """Write a folder-shaped store and publish it at ``url`` with its marker last.

    ::

        with DirectoryCommit(url, storage_options) as c:
            write_store(c.url)                 # any number of files under c.url / c.path
            c.commit({"config_hash": h, ...})  # the marker; the store is visible from here

    Leaving the block without :meth:`commit` (or with an exception) publishes nothing and
    removes what was written (on object stores the old version was already unpublished).
    See the module docstring for the protocol and its crash guarantees.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.storage_options = storage_options
        self.fs, self.final_path = get_fs(url.rstrip("/"), storage_options)
        self.local = is_local(self.fs)
        self.committed = False
        if self.local:
            os.makedirs(os.path.dirname(self.final_path) or ".", exist_ok=True)
            self.path = staging_path(self.final_path)
            os.makedirs(self.path)
        else:
            self._unpublish()
            self.path = self.final_path

    @property
    def url(self) -> str:
        """Where the writer puts the store's files (local staging folder, or the prefix)."""
        return to_url(self.fs, self.path)

    @property
    def final_url(self) -> str:
        return to_url(self.fs, self.final_path)

    def __enter__(self) -> DirectoryCommit:
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if not self.committed:
            self.abort()

    def _unpublish(self) -> None:
        """Object stores: the old marker goes first (readers stop trusting the prefix), then
        the old objects."""
        marker = f"{self.final_path}/{MARKER_NAME}"
        self.fs.invalidate_cache(self.final_path)
        if retry(lambda: self.fs.exists(marker), what="exists"):
            retry(lambda: self.fs.rm_file(marker), what=f"unpublish {redact(self.final_url)}")
        if retry(lambda: self.fs.exists(self.final_path), what="exists"):
            retry(
                lambda: self.fs.rm(self.final_path, recursive=True),
                what=f"clear {redact(self.final_url)}",
            )

    def commit(self, marker: Mapping[str, Any]) -> str:
        """Write ``marker`` (JSON, sorted keys) last and make the store visible; its URL."""
        body = json.dumps(dict(marker), sort_keys=True).encode()
        if self.local:
            atomic_write_bytes(os.path.join(self.path, MARKER_NAME), body)
            old = None
            if os.path.lexists(self.final_path):
                old = f"{self.path}.old"
                os.rename(self.final_path, old)
            os.rename(self.path, self.final_path)
            _fsync_dir(os.path.dirname(self.final_path))
            if old:
                _remove(old)
        else:
            atomic_write_bytes(
                to_url(self.fs, f"{self.final_path}/{MARKER_NAME}"), body, self.storage_options
            )
        self.committed = True
        return self.final_url

    def abort(self) -> None:
        """Remove what was written (best effort; never the published local folder)."""
        try:
            if self.local:
                _remove(self.path)
            elif self.fs.exists(self.path):
                self.fs.rm(self.path, recursive=True)
        except OSError:  # pragma: no cover - best effort cleanup
            log.warning("could not clean up %s", redact(self.url))


def read_marker(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``_COMPLETE`` marker of the store at ``url``; ``None`` when the store is absent,
    incomplete or its marker unreadable. :class:`StorageUnavailable` propagates: an
    unreachable store is not an absent one."""
    fs, path = get_fs(url.rstrip("/"), storage_options)
    marker = f"{path}/{MARKER_NAME}"
    try:
        fs.invalidate_cache(marker)
        raw = retry(lambda: fs.cat_file(marker), what=f"read {redact(url)}/{MARKER_NAME}")
        found = json.loads(raw)
    except StorageUnavailable:
        raise
    except (ValueError, OSError):  # absent, torn or foreign (UnicodeDecodeError: ValueError)
        return None
    return found if isinstance(found, dict) else None


def is_complete(
    url: str, storage_options: Mapping[str, Any] | None = None, **expected: Any
) -> bool:
    """True when the store at ``url`` has a marker whose fields equal every non-``None``
    ``expected`` one (e.g. ``config_hash=h, source_checksum=c``)."""
    marker = read_marker(url, storage_options)
    if marker is None:
        return False
    return all(v is None or marker.get(k) == v for k, v in expected.items())


# --------------------------------------------------------------------------- leftovers


def remove_staging(path: str) -> list[str]:
    """Remove the staging siblings of local ``path`` (a killed writer's); their paths. Call
    it only when no writer of ``path`` may still be running."""
    folder, name = os.path.split(path.rstrip("/"))
    found = sorted(glob.glob(os.path.join(glob.escape(folder), staging_glob(name))))
    for p in found:
        _remove(p)
    return found


def clean_staging(
    root: str,
    *,
    older_than_s: float = 24 * 3600,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Remove staging siblings (files or folders) anywhere under local ``root`` whose newest
    content is older than ``older_than_s``; their paths (committed stores are not searched). Object stores stage nothing (a
    store is written in place, marker last), so there it removes nothing. Call it only when
    no writer that started within ``older_than_s`` may still be running."""
    fs, root_path = get_fs(root, storage_options)
    if not is_local(fs) or not os.path.isdir(root_path):
        return []
    now, removed = time.time(), []
    for dirpath, dirnames, filenames in os.walk(root_path):
        for name in sorted([*dirnames, *filenames]):
            if not is_staging(name):
                continue
            p = os.path.join(dirpath, name)
            if now - _newest_mtime(p) >= older_than_s:
                _remove(p)
                removed.append(p)
        # staging folders are gone; committed stores hold no staging inside: not walked
        dirnames[:] = [
            d
            for d in dirnames
            if not is_staging(d) and not os.path.exists(os.path.join(dirpath, d, MARKER_NAME))
        ]
    return removed


def _newest_mtime(path: str) -> float:
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, _, filenames in os.walk(path):
            for f in filenames:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, f)).st_mtime)
    return newest


__all__ = [
    "MARKER_NAME",
    "AtomicFile",
    "DirectoryCommit",
    "atomic_write_bytes",
    "claim",
    "clean_staging",
    "is_complete",
    "is_staging",
    "move_into",
    "read_marker",
    "remove_staging",
    "staged_path",
    "staging_glob",
    "staging_path",
]
