"""Reading one shard: fetch (any fsspec URL), verify its sha256, iterate its samples.

A shard is fetched whole into a spooled temporary file (memory up to ``spool_bytes``, then
local disk) while hashing, so a corrupt or truncated shard is caught *before* any of its
samples is used. Transient object-store errors and digest mismatches are retried with
backoff; a shard that still fails is reported as :class:`ShardFailed` and the stream skips
it and counts it (see :mod:`brainomni.loader.dataset`). Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..storage import get_fs, is_local, redact

log = logging.getLogger(__name__)

_MEMBER = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,80})\.(?P<ext>[a-z0-9_]+(?:\.[a-z0-9_]+)*)$")
_NPY_DTYPES = {"float16", "float32", "int8", "int16", "uint16", "int32"}


class ShardFailed(RuntimeError):
    """A shard could not be read (after retries): the stream skips it and counts it."""


@dataclass(frozen=True)
class ShardSource:
    """Where a shard is and what it must hash to."""

    url: str
    sha256: str | None
    samples: int


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


def npy_load(data: bytes) -> np.ndarray:
    """``.npy`` bytes -> array (a view of ``data``), never unpickling; plain numeric dtypes."""
    fh = io.BytesIO(data)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.name not in _NPY_DTYPES or dtype.hasobject:
        raise ValueError(f"unexpected dtype {dtype} in a shard member")
    n = int(np.prod(shape, dtype=np.int64))
    a = np.frombuffer(data, dtype=dtype, count=n, offset=fh.tell())
    return a.reshape(shape, order="F" if fortran else "C")


def _fetch(src: ShardSource, cfg: ReadConfig, storage_options: dict | None) -> BinaryIO:
    """The shard's bytes as a seekable file; sha256 checked when asked."""
    fs, path = get_fs(src.url, storage_options)
    if is_local(fs) and not cfg.verify_sha256:
        return open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    out = tempfile.SpooledTemporaryFile(max_size=cfg.spool_bytes)  # noqa: SIM115
    sha = hashlib.sha256()
    try:
        with fs.open(path, "rb", block_size=cfg.block_bytes) as fh:
            while True:
                b = fh.read(cfg.block_bytes)
                if not b:
                    break
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
    fh: BinaryIO, wanted: Callable[[int], bool], count: list[int] | None = None
) -> Iterator[tuple[int, str, dict]]:
    """``(index, key, {ext: bytes})`` for the samples of a tar whose index is ``wanted``.

    Members of one sample are consecutive (as the packer writes them); unwanted samples are
    skipped without reading their bytes into Python objects. ``count[0]`` ends as the number
    of samples in the tar.
    """
    count = count if count is not None else [0]
    idx, key, members = -1, None, {}
    seekable = getattr(fh, "seekable", lambda: False)()
    with tarfile.open(fileobj=fh, mode="r:" if seekable else "r|") as tar:
        for m in tar:
            if not m.isfile():
                raise ValueError(f"unexpected tar entry {m.name!r} (not a regular file)")
            mm = _MEMBER.match(m.name)
            if not mm:
                raise ValueError(f"unexpected tar member name {m.name!r}")
            if mm["key"] != key:
                if key is not None and wanted(idx):
                    yield idx, key, members
                idx, key, members = idx + 1, mm["key"], {}
                count[0] = idx + 1
            if wanted(idx):
                f = tar.extractfile(m)
                members[mm["ext"]] = f.read() if f is not None else b""
        if key is not None and wanted(idx):
            yield idx, key, members


def read_shard(
    src: ShardSource,
    indices: set[int] | None,
    decode: Callable[[str, dict], dict[str, Any]],
    cfg: ReadConfig,
    storage_options: dict | None = None,
    stats: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[int, dict[str, Any]]:
    """Decoded samples ``{index: sample}`` of one shard (all, or those in ``indices``).

    The whole shard is validated (fetch, digest, member names, sample count) before anything
    is returned, so a failure never leaves a half-used shard. Raises :class:`ShardFailed`
    after ``cfg.attempts`` tries.
    """
    stats = stats if stats is not None else {}
    last: BaseException | None = None
    for attempt in range(cfg.attempts):
        try:
            with _fetch(src, cfg, storage_options) as fh:
                out: dict[int, dict[str, Any]] = {}
                count = [0]

                def want(i: int) -> bool:
                    return indices is None or i in indices

                for i, key, members in iter_members(fh, want, count):
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


# --------------------------------------------------------------------------- decoders


def decode_raw(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """A packed signal sample (``brainomni.pack``): signal (C, T), sensors (C, 6), types (C,)."""
    for ext in ("signal.npy", "sensors.npy", "sensor_type.npy"):
        if ext not in m:
            raise ValueError(f"sample {key!r} lacks its {ext} member")
    sig = npy_load(m["signal.npy"])
    sensors = npy_load(m["sensors.npy"]).astype(np.float32)
    types = npy_load(m["sensor_type.npy"])
    c = sig.shape[0]
    if sig.ndim != 2 or sensors.shape != (c, 6) or types.shape != (c,):
        raise ValueError(f"sample {key!r}: inconsistent shapes")
    return {"key": key, "signal": sig, "sensors": sensors, "sensor_type": types, "n": c}


def decode_tokens(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """A token sample (``brainomni.tokenize``): codebook indices (S, W, Q)."""
    if "tokens.npy" not in m:
        raise ValueError(f"sample {key!r} lacks its tokens.npy member")
    tok = npy_load(m["tokens.npy"])
    if tok.ndim != 3:
        raise ValueError(f"sample {key!r}: tokens must be (S, W, Q), got {tok.shape}")
    return {"key": key, "tokens": tok, "n": 0}


def decode_meta(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """Raw sample plus its JSON metadata (for tokenizing)."""
    d = decode_raw(key, m)
    d["meta"] = json.loads(m.get("json", b"{}"))
    return d


DECODERS: dict[str, Callable[[str, dict], dict[str, Any]]] = {
    "raw": decode_raw,
    "tokens": decode_tokens,
    "raw+meta": decode_meta,
}


__all__ = [
    "DECODERS",
    "ReadConfig",
    "ShardFailed",
    "ShardSource",
    "decode_raw",
    "decode_tokens",
    "iter_members",
    "npy_load",
    "read_shard",
]
