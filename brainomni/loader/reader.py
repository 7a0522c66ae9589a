"""Reading one shard: fetch (any fsspec URL), verify its sha256, iterate its samples.

A shard is fetched whole into a spooled temporary file (memory up to ``spool_bytes``, then
local disk) while hashing, so a corrupt or truncated shard is caught *before* any of its
samples is used. Transient object-store errors and digest mismatches are retried with
backoff; a shard that still fails is reported as :class:`ShardFailed` and the stream skips
it and counts it (see :mod:`brainomni.loader.dataset`). Members are checked and decoded by
the sample format (:mod:`brainomni.formats.sample`, which says why webdataset's own tar
reader is not used here). Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..formats.sample import LIMITS, SCHEMA_OF, Limits, iter_samples
from ..io.fs import get_fs, is_local
from ..io.redact import redact

log = logging.getLogger(__name__)


class ShardFailed(RuntimeError):
    """A shard could not be read (after retries): the stream skips it and counts it."""


@dataclass(frozen=True)
class ShardSource:
    """Where a shard is and what it must hash to."""

    url: str
    sha256: str | None
    samples: int
    bytes: int | None = None  # the manifest's byte count: a longer shard is refused early


@dataclass(frozen=True)
class ReadConfig:
    verify_sha256: bool = True
    attempts: int = 3  # fetch + verify + parse attempts before a shard is skipped
    backoff_s: float = 0.5
    spool_bytes: int = 256 * 1024 * 1024
    block_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("ReadConfig.attempts must be >= 1")


def _fetch(src: ShardSource, cfg: ReadConfig, storage_options: dict | None) -> BinaryIO:
    """The shard's bytes as a seekable file; sha256 checked when asked."""
    fs, path = get_fs(src.url, storage_options)
    if is_local(fs) and not cfg.verify_sha256:
        return open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    out = tempfile.SpooledTemporaryFile(max_size=cfg.spool_bytes)  # noqa: SIM115
    sha = hashlib.sha256()
    n = 0
    try:
        with fs.open(path, "rb", block_size=cfg.block_bytes) as fh:
            while True:
                b = fh.read(cfg.block_bytes)
                if not b:
                    break
                n += len(b)
                if src.bytes is not None and n > src.bytes:
                    raise ValueError(
                        f"{redact(src.url)} holds more than the {src.bytes} bytes its manifest "
                        "says: replaced or appended to; re-publish or restore it"
                    )
                sha.update(b)
                out.write(b)
    except BaseException:
        out.close()
        raise
    if cfg.verify_sha256 and src.sha256 and sha.hexdigest() != src.sha256:
        out.close()
        raise ValueError(f"sha256 mismatch for {redact(src.url)}")
    out.seek(0)
    return out


def iter_members(
    fh: BinaryIO,
    wanted: Callable[[int], bool],
    count: list[int] | None = None,
    *,
    schema: str = "raw",
    limits: Limits = LIMITS,
    where: str = "shard",
) -> Iterator[tuple[int, str, dict]]:
    """``(index, key, {ext: bytes})`` for the samples of a tar whose index is ``wanted``.

    The shard is checked as it streams by the check ``verify`` runs too
    (:func:`brainomni.formats.sample.iter_samples`): unknown or oversize members reject it
    before their bytes are read, and members of unwanted samples are skipped in bounded
    chunks. ``count[0]`` ends as the number of samples in the tar.
    """
    count = count if count is not None else [0]
    for s in iter_samples(fh, schema, want=wanted, limits=limits, where=where):
        count[0] = s.index + 1
        if wanted(s.index):
            yield s.index, s.key, s.members


def read_shard(
    src: ShardSource,
    indices: set[int] | None,
    decode: Callable[[str, dict], dict[str, Any]],
    cfg: ReadConfig,
    storage_options: dict | None = None,
    stats: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    schema: str | None = None,
) -> dict[int, dict[str, Any]]:
    """Decoded samples ``{index: sample}`` of one shard (all, or those in ``indices``).

    The whole shard is validated (fetch, digest, member names, sample count) before anything
    is returned, so a failure never leaves a half-used shard. Raises :class:`ShardFailed`
    after ``cfg.attempts`` tries. ``schema`` (``raw`` / ``tokens``) defaults to the one
    ``decode`` reads.
    """
    stats = stats if stats is not None else {}
    schema = schema or SCHEMA_OF.get(decode, "raw")
    last: BaseException | None = None
    for attempt in range(cfg.attempts):
        try:
            with _fetch(src, cfg, storage_options) as fh:
                out: dict[int, dict[str, Any]] = {}
                count = [0]

                def want(i: int) -> bool:
                    return indices is None or i in indices

                where = redact(src.url)
                for i, key, members in iter_members(fh, want, count, schema=schema, where=where):
                    out[i] = decode(key, members)
                n = count[0]
                if src.samples and n != src.samples:
                    raise ValueError(
                        f"{redact(src.url)} holds {n} samples, the manifest says {src.samples}"
                    )
            stats["shards_read"] = stats.get("shards_read", 0) + 1
            return out
        except (OSError, ValueError, tarfile.TarError, EOFError, KeyError) as exc:
            last = exc
            stats["shard_retries"] = stats.get("shard_retries", 0) + 1
            log.warning(
                "shard %s failed (try %d/%d): %s: %s",
                redact(src.url),
                attempt + 1,
                cfg.attempts,
                type(exc).__name__,
                exc,
            )
            if attempt + 1 < cfg.attempts:
                sleep(cfg.backoff_s * (2**attempt))
    raise ShardFailed(f"{redact(src.url)}: {type(last).__name__}: {last}") from last


__all__ = ["ReadConfig", "ShardFailed", "ShardSource", "iter_members", "read_shard"]
