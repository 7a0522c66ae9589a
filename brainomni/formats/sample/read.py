"""The checked streaming reader of sample shards (:func:`iter_samples`).

The loader, ``verify`` and the labelled sets read shards here, not with webdataset's tar
reader: that reader reads every member whole into memory before a decoder sees it
(``webdataset.tariterators``), which is what a hostile member exploits, and it cannot skip the
members of samples already delivered (exact resume) nor hash the stream as it is checked.
Nothing in a shard is trusted:

* the tar is read as a stream (``tarfile`` mode ``r|``) and every member's size is checked
  against its limit *before* any of its bytes is read; an unknown, oversize, duplicated or
  non-regular member rejects the shard without being read; tar extension headers (pax,
  GNU long names) larger than :data:`MAX_EXT_HEADER` are refused before ``tarfile`` would
  read them whole;
* a ``.npy`` member is judged by its header alone (:func:`.schema.parse_npy_header`) before
  anything is allocated;
* members a caller does not need (every signal when verifying, unwanted samples when
  loading) are skipped by reading and dropping bounded chunks (:attr:`Limits.chunk_bytes`),
  never materialised whole; small members (``json``, ``sensors``, ``sensor_type``) are
  always read (bounded by their limits) and checked;
* a sample's members must be consecutive and complete, and agree on the channel count;
* a damaged header or a missing end-of-archive marker is an error (``tarfile`` alone
  would end the archive there silently).

Failures raise :class:`~.schema.SampleError` (a ``ValueError``) naming the shard, the member
and what to do; tar damage raises ``tarfile.TarError`` or ``EOFError``.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .schema import (
    MAX_NPY_HEADER,
    N_SENSOR_TYPES,
    SCHEMAS,
    NpyHeader,
    NpyRule,
    SampleError,
    npy_array,
    parse_npy_header,
    split_member,
)

MAX_EXT_HEADER = 64 * 1024  # pax / GNU long-name headers (ours are plain USTAR: none)

_EXT_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one shard member may hold (checked before reading it)."""

    max_member_bytes: int = 512 * 1024 * 1024  # one .npy member
    max_json_bytes: int = 1024 * 1024
    max_channels: int = 4096
    chunk_bytes: int = 256 * 1024  # largest read when skipping a member

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Limits.{k} must be a positive integer, got {v!r}")


LIMITS = Limits()

_ALWAYS_READ = {"json", "sensors.npy", "sensor_type.npy"}  # small: bounded by the limits


@dataclass
class Sample:
    """One checked sample: ``members`` holds bytes of the members read (see iter_samples)."""

    index: int
    key: str
    headers: dict[str, NpyHeader] = field(default_factory=dict)
    members: dict[str, bytes | bytearray] = field(default_factory=dict)
    meta: dict[str, Any] | None = None


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses huge extension headers before ``tarfile`` reads them whole (``_proc_member`` is
    tarfile's documented hook for subclasses)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile):  # noqa: ANN206 - tarfile's signature
        try:
            return super().fromtarfile(tarfile_)
        except (
            tarfile.InvalidHeaderError,
            tarfile.TruncatedHeaderError,
            tarfile.EmptyHeaderError,
        ) as exc:  # tarfile would silently end the archive here after its first member
            raise tarfile.ReadError(
                f"damaged tar header or missing end-of-archive marker at byte "
                f"{tarfile_.offset}: {exc}"
            ) from None

    def _proc_member(self, tarfile_: tarfile.TarFile):  # noqa: ANN202 - tarfile's signature
        if self.type in _EXT_TYPES and self.size > MAX_EXT_HEADER:
            raise tarfile.ReadError(
                f"tar extension header of {self.size} bytes (limit {MAX_EXT_HEADER})"
            )
        return super()._proc_member(tarfile_)


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EOFError(f"{what}: truncated ({len(b)} of {n} bytes)")
    return b


def _read_rest(f: BinaryIO, prefix: bytes, size: int, chunk: int, what: str) -> bytearray:
    """The whole member (``prefix`` already read) in one buffer of its checked size."""
    buf = bytearray(size)
    buf[: len(prefix)] = prefix
    view, pos = memoryview(buf), len(prefix)
    while pos < size:
        n = f.readinto(view[pos : min(size, pos + chunk)])
        if not n:
            raise EOFError(f"{what}: truncated ({size - pos} bytes missing)")
        pos += n
    return buf


def _drain(f: BinaryIO, n: int, chunk: int, what: str) -> None:
    while n > 0:
        b = f.read(min(chunk, n))
        if not b:
            raise EOFError(f"{what}: truncated ({n} bytes missing)")
        n -= len(b)


def iter_samples(
    fileobj: BinaryIO,
    schema: str = "raw",
    *,
    want: Callable[[int], bool] = lambda i: False,
    limits: Limits = LIMITS,
    where: str = "shard",
) -> Iterator[Sample]:
    """Check a shard as a stream and yield its samples in order (index 0, 1, ...).

    Samples whose index is ``want``-ed carry the bytes of all their members; the others carry
    only the small members (json, sensors, sensor_type) and the ``.npy`` headers. The number
    of samples yielded is the shard's sample count. Raises :class:`SampleError` on the first
    problem (nothing after it is read).
    """
    if schema not in SCHEMAS:
        raise ValueError(f"unknown shard schema {schema!r} (one of {sorted(SCHEMAS)})")
    rules = SCHEMAS[schema]
    seen: set[str] = set()
    cur: Sample | None = None
    width: tuple[int, ...] | None = None  # the non-channel dims every sample shares
    with tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_BoundedTarInfo) as tar:
        for m in tar:
            what = f"{where}: member {m.name!r}"
            if not m.isfile() or m.type == tarfile.GNUTYPE_SPARSE:
                raise SampleError(f"{what} is not a regular file: a shard holds files only")
            try:
                key, ext = split_member(m.name, schema)
            except SampleError as exc:
                raise SampleError(f"{where}: {exc}") from None
            if cur is None or key != cur.key:
                if cur is not None:
                    width = _finish(cur, schema, rules, limits, width, where)
                    yield cur
                if key in seen:
                    raise SampleError(
                        f"{what}: sample {key!r} appears twice (its members must be consecutive)"
                    )
                seen.add(key)
                cur = Sample(len(seen) - 1, key)
            if ext in cur.headers or ext in cur.members:
                raise SampleError(f"{what}: duplicate member of sample {key!r}")
            rule = rules[ext]
            cap = limits.max_json_bytes if rule is None else limits.max_member_bytes
            if m.size > cap:
                raise SampleError(
                    f"{what}: {m.size} bytes, over the {cap}-byte limit for {ext} members "
                    "(brainomni.formats.sample.Limits)"
                )
            f = tar.extractfile(m)
            if f is None:  # pragma: no cover - isfile() members always have data
                raise SampleError(f"{what}: no data")
            if rule is None:
                _check_json(cur, _read_exact(f, m.size, what), what)
                continue
            prefix = _read_exact(f, min(m.size, 16), what)
            prefix += _npy_header_rest(f, prefix, m.size, what)
            h = parse_npy_header(prefix, m.size, rule, what)
            if schema == "raw" and h.shape[0] > limits.max_channels:
                raise SampleError(f"{what}: {h.shape[0]} channels (limit {limits.max_channels})")
            cur.headers[ext] = h
            if want(cur.index) or ext in _ALWAYS_READ:
                cur.members[ext] = _read_rest(f, prefix, m.size, limits.chunk_bytes, what)
            else:
                _drain(f, m.size - len(prefix), limits.chunk_bytes, what)
        if cur is not None:
            _finish(cur, schema, rules, limits, width, where)
            yield cur


def _npy_header_rest(f: BinaryIO, prefix: bytes, size: int, what: str) -> bytes:
    """The rest of a ``.npy`` header after its first 16 bytes (length from the preamble)."""
    if len(prefix) < 12 or prefix[:6] != b"\x93NUMPY":
        raise SampleError(f"{what}: not a .npy member (bad magic)")
    if prefix[6] == 1:
        total = 10 + int.from_bytes(prefix[8:10], "little")
    else:
        total = 12 + int.from_bytes(prefix[8:12], "little")
    if total > MAX_NPY_HEADER + 12 or total > size:
        raise SampleError(f"{what}: .npy header of {total} bytes (limit {MAX_NPY_HEADER})")
    return _read_exact(f, max(0, total - len(prefix)), what)


def _check_json(s: Sample, data: bytes, what: str) -> None:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise SampleError(f"{what}: not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise SampleError(f"{what}: metadata must be a JSON object, got {type(meta).__name__}")
    s.meta = meta
    s.members["json"] = data


def _finish(
    s: Sample,
    schema: str,
    rules: dict[str, NpyRule | None],
    limits: Limits,
    width: tuple[int, ...] | None,
    where: str,
) -> tuple[int, ...]:
    """Cross-member checks of a complete sample; the dims later samples must share."""
    missing = [e for e in rules if e not in s.headers and e not in s.members]
    if missing:
        raise SampleError(f"{where}: sample {s.key!r} lacks {missing} (truncated or foreign)")
    if schema == "raw":
        c, t = s.headers["signal.npy"].shape
        if not 1 <= c <= limits.max_channels or t < 1:
            raise SampleError(
                f"{where}: sample {s.key!r}: signal {(c, t)} (1..{limits.max_channels} channels)"
            )
        if s.headers["sensors.npy"].shape != (c, 6) or s.headers["sensor_type.npy"].shape != (c,):
            raise SampleError(
                f"{where}: sample {s.key!r}: signal, sensors and sensor_type disagree on the "
                "channel count"
            )
        types = npy_array(s.members["sensor_type.npy"], rules["sensor_type.npy"])
        if types.size and not (int(types.min()) >= 0 and int(types.max()) < N_SENSOR_TYPES):
            raise SampleError(f"{where}: sample {s.key!r}: sensor_type outside 0..2")
        mine: tuple[int, ...] = (t,)
    else:
        mine = s.headers["tokens.npy"].shape
        if min(mine) < 1:
            raise SampleError(f"{where}: sample {s.key!r}: empty tokens {mine}")
    if width is not None and mine != width:
        raise SampleError(
            f"{where}: sample {s.key!r} has shape {mine}, earlier samples {width}: one shard "
            "holds one window length"
        )
    return mine


def count_samples(
    fileobj: BinaryIO, schema: str = "raw", *, limits: Limits = LIMITS, where: str = "shard"
) -> int:
    """Check a whole shard without keeping any signal; its sample count."""
    return sum(1 for _ in iter_samples(fileobj, schema, limits=limits, where=where))


__all__ = ["LIMITS", "MAX_EXT_HEADER", "Limits", "Sample", "count_samples", "iter_samples"]
