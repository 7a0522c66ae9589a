"""A frozen listing of a source tree: one ``find`` call, then every decision is made from it.

Checksums (the ``checksum`` field of :class:`~brainomni.records.RecordingRef`):

* object stores: ``etag:<ETag>`` from the listing (no extra request). A multipart ETag is not
  an MD5 of the content but is stable for one upload of one object, which is what resume
  needs: a re-uploaded file gets a new ETag and is redone;
* local disk: ``sha256:<hex>`` of the file's bytes, streamed in 1 MiB chunks (content, not
  size/mtime, so copies and re-extracted archives keep their ids and skip state);
* multi-file recordings (BrainVision, EEGLAB, split FIF, CTF ``.ds``, EGI ``.mff``, BTi):
  ``tree-sha256:<hex>`` over the sorted ``relname, size, checksum`` lines of every file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from brainomni.io.fs import get_fs, is_local, iter_chunks, to_url
from brainomni.io.redact import redact
from brainomni.io.retry import retry

logger = logging.getLogger(__name__)


@dataclass
class Listing:
    """Every file below ``root`` (fs paths → fsspec info), taken once at construction."""

    fs: Any
    root: str  # fs path of the root, no trailing slash
    files: dict[str, dict[str, Any]]  # fs path -> info (plain files only)
    dirs: frozenset[str]  # fs paths of folders below root
    compute_checksums: bool = True
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def take(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        checksums: bool = True,
    ) -> Listing:
        """List ``url`` recursively in one ``find`` call (retried on transient errors)."""
        fs, root = get_fs(url, storage_options)
        fs.invalidate_cache(root)  # a crawl must see the store as it is now
        if not retry(lambda: fs.isdir(root), what=f"stat {url}"):
            raise FileNotFoundError(f"source root {redact(url)!r} is not a folder or prefix")
        found = retry(lambda: fs.find(root, withdirs=True, detail=True), what=f"list {url}")
        files, dirs = {}, set()
        for path, info in found.items():
            path = path.rstrip("/")
            if path == root:
                continue
            if info.get("type") == "directory":
                dirs.add(path)
            else:
                files[path] = info
        # Object stores may omit explicit folder entries: derive them from file keys.
        for path in files:
            parent = path.rsplit("/", 1)[0]
            while len(parent) > len(root) and parent not in dirs:
                dirs.add(parent)
                parent = parent.rsplit("/", 1)[0]
        logger.info("listed %s: %d files, %d folders", redact(url), len(files), len(dirs))
        return cls(fs, root, dict(sorted(files.items())), frozenset(dirs), checksums)

    # ------------------------------------------------------------------ paths

    def rel(self, path: str) -> str:
        """Path relative to the root, forward slashes."""
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path

    def abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, path: str) -> str:
        """URL (or local path) of an fs path.

        Paths below the root get the root's URL as a prefix: ``fs.unstrip_protocol`` per
        path cost a noticeable share of a 200,000-recording crawl (a URL per recording and
        sidecar). The prefix is used only where it gives what ``to_url`` gives."""
        prefix = self._cache.get("url-prefix")
        if prefix is None:
            root_url = to_url(self.fs, self.root)
            probe = self.root + "/x"
            ok = to_url(self.fs, probe) == root_url + "/x"
            prefix = self._cache["url-prefix"] = (root_url, ok)
        if prefix[1] and path.startswith(self.root + "/"):
            return prefix[0] + path[len(self.root) :]
        return to_url(self.fs, path)

    def is_local(self) -> bool:
        got = self._cache.get("is-local")
        if got is None:
            got = self._cache["is-local"] = is_local(self.fs)
        return got

    def rel_files(self) -> list[str]:
        """Relative paths of every file, sorted (computed once)."""
        got = self._cache.get("rel-files")
        if got is None:
            n = len(self.root) + 1
            got = self._cache["rel-files"] = [
                p[n:] if p.startswith(self.root + "/") else p for p in self.files
            ]
        return got

    def exists(self, rel: str) -> bool:
        return self.abs(rel) in self.files

    def under(self, rel_dir: str) -> list[str]:
        """Relative paths of every file inside folder ``rel_dir`` (recursive).

        A binary search in the sorted paths (``files`` is sorted at construction): a crawl
        asks this once per folder recording (CTF ``.ds``, EGI ``.mff``, BTi, split FIF), so a
        scan of every file each time would make the crawl quadratic."""
        import bisect

        prefix = self.abs(rel_dir) + "/"
        paths = self._cache.get("sorted-paths")
        if paths is None:
            paths = self._cache["sorted-paths"] = list(self.files)
        out = []
        for p in paths[bisect.bisect_left(paths, prefix) :]:
            if not p.startswith(prefix):
                break
            out.append(self.rel(p))
        return out

    # ------------------------------------------------------------------ sizes and checksums

    def size(self, rels: Iterable[str]) -> int:
        return sum(self._size(r) for r in rels)

    def _size(self, rel: str) -> int:
        return int(self.files[self.abs(rel)].get("size") or 0)

    def file_checksum(self, rel: str) -> str | None:
        """Checksum of one file (see the module docstring); ``None`` when disabled."""
        if not self.compute_checksums:
            return None
        path = self.abs(rel)
        info = self.files[path]
        if self.is_local():
            return "sha256:" + self._sha256(path)
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("crc32c")
        if etag:
            return "etag:" + str(etag).strip('"')
        return "sha256:" + self._sha256(path)  # e.g. http without ETag: read it

    def checksum(self, rels: Iterable[str]) -> str | None:
        """One checksum for a recording made of ``rels`` (a single file or several)."""
        rels = sorted(rels)
        if not self.compute_checksums or not rels:
            return None
        if len(rels) == 1:
            return self.file_checksum(rels[0])
        common = rels[0].rsplit("/", 1)[0] + "/" if "/" in rels[0] else ""
        h = hashlib.sha256()
        for r in rels:
            name = r[len(common) :] if r.startswith(common) else r
            h.update(f"{name}\t{self._size(r)}\t{self.file_checksum(r)}\n".encode())
        return "tree-sha256:" + h.hexdigest()

    def _sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with retry(lambda: self.fs.open(path, "rb"), what=f"open {path}") as fh:
            for chunk in iter_chunks(fh):
                h.update(chunk)
        return h.hexdigest()

    # ------------------------------------------------------------------ small reads (cached)

    def read_text(self, rel: str) -> str:
        """Text of a small file (sidecars), cached for the life of the listing.

        Decoded by :func:`brainomni.sources.sidecars.decode` (UTF-8, then Latin-1; the one
        used is in :meth:`encoding`); raises :class:`~brainomni.sources.sidecars.SidecarError`
        for a file too large or binary to be a sidecar.
        """
        from brainomni.sources.sidecars import check_size, decode

        key = "text:" + rel
        if key not in self._cache:
            path = self.abs(rel)
            where = self.url(path)
            check_size(int(self.files.get(path, {}).get("size") or 0), where)  # before reading
            raw = self._cache.pop("raw:" + rel, None)
            if raw is None:
                raw = retry(lambda: self.fs.cat_file(path), what=f"read {where}")
            self._cache[key], self._cache["encoding:" + rel] = decode(raw, where)
        return self._cache[key]

    def encoding(self, rel: str) -> str | None:
        """The decoding :meth:`read_text` used for ``rel`` (``None`` before it was read)."""
        return self._cache.get("encoding:" + rel)

    def prefetch(self, rels: Iterable[str], *, what: str = "files", batch: int = 512) -> None:
        """Fetch many small files at once into the cache that :meth:`read_text` reads.

        On object stores ``fs.cat`` runs a batch's requests concurrently: a crawl reads a
        sidecar or two per recording, and one request at a time would take hours at
        200,000 recordings. A file that fails here is left to :meth:`read_text`, which
        reads it alone (with retries) and reports it."""
        from brainomni.sources.sidecars import MAX_SIDECAR_BYTES

        rels = [  # oversized files are left to read_text, which refuses them by name
            r
            for r in rels
            if "text:" + r not in self._cache
            and "raw:" + r not in self._cache
            and int(self.files.get(self.abs(r), {}).get("size") or 0) <= MAX_SIDECAR_BYTES
        ]
        if self.is_local() or not rels:
            return
        for i in range(0, len(rels), batch):
            chunk = rels[i : i + batch]
            paths = [self.abs(r) for r in chunk]
            try:
                got = retry(lambda p=paths: self.fs.cat(p, on_error="return"), what=f"read {what}")
            except Exception:  # noqa: BLE001 - read one by one later, where errors are named
                continue
            for rel, path in zip(chunk, paths, strict=True):
                data = got.get(path) if isinstance(got, dict) else None
                if isinstance(data, bytes):
                    self._cache["raw:" + rel] = data

    def read_json(self, rel: str) -> dict[str, Any]:
        """A JSON object sidecar; :class:`~brainomni.sources.sidecars.SidecarError` otherwise."""
        from brainomni.sources.sidecars import parse_json

        key = "json:" + rel
        if key not in self._cache:
            text = self.read_text(rel)
            by_text = self._cache.setdefault("json-by-text", {})
            if text not in by_text:  # per-recording sidecars of one dataset are often equal
                by_text[text] = parse_json(text, self.url(self.abs(rel)))
            self._cache[key] = by_text[text]
        return self._cache[key]

    def read_tsv(self, rel: str) -> list[dict[str, str]]:
        """Rows of a BIDS TSV file (header line, tab-separated, no quoting)."""
        from brainomni.sources.sidecars import parse_tsv

        key = "tsv:" + rel
        if key not in self._cache:
            text = self.read_text(rel)
            # Parsed once per distinct content: a dataset's per-recording channels.tsv are
            # mostly identical (one cap, one device), and parsing them was most of a large
            # crawl's CPU. The rows are shared: callers must not modify them.
            by_text = self._cache.setdefault("tsv-by-text", {})
            if text not in by_text:
                by_text[text] = parse_tsv(text)
            self._cache[key] = by_text[text]
        return self._cache[key]
