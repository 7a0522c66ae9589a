"""The sample format's schema: member names, keys, dtypes, the checked ``.npy`` header.

The one set of members and dtypes (:data:`SCHEMAS`) that writing (:mod:`.write`), reading
(:mod:`.read`) and decoding (:mod:`.decode`) use; a ``.npy`` member is judged by its header
alone (``numpy.lib.format.read_magic`` / ``read_array_header_*``, never ``allow_pickle``):
object dtypes (pickles), other dtypes, other ranks, and a shape whose byte count
(``prod(shape) * itemsize``, in Python integers) differs from what the member holds are
refused before anything is allocated.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

MAX_NPY_HEADER = 64 * 1024
_MEMBER_RE = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,80})\.(?P<ext>[a-z0-9_]+(?:\.[a-z0-9_]+)*)$")


class SampleError(ValueError):
    """A shard member or sample that breaks the sample format (the shard is rejected)."""


@dataclass(frozen=True)
class NpyRule:
    dtypes: frozenset[str]
    ndim: int | None  # None: any rank


# The members of each shard kind and their dtypes: the one set both writing and reading
# use; every member listed is required.
SCHEMAS: dict[str, dict[str, NpyRule | None]] = {
    "raw": {
        "signal.npy": NpyRule(frozenset({"float16", "float32"}), 2),
        "sensors.npy": NpyRule(frozenset({"float32"}), 2),
        "sensor_type.npy": NpyRule(frozenset({"int8"}), 1),
        "json": None,
    },
    "tokens": {
        "tokens.npy": NpyRule(frozenset({"int16", "int32"}), 3),
        "json": None,
    },
}
N_SENSOR_TYPES = 3  # EEG 0, MAG 1, GRAD 2


ANY_NPY = NpyRule(
    frozenset(d for rules in SCHEMAS.values() for r in rules.values() if r for d in r.dtypes),
    None,
)


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data


_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def validate_key(key: str) -> None:
    """Keys are 1-80 chars of ``[A-Za-z0-9_-]``: no dots (WebDataset splits on the first dot),
    no slashes, nothing that a tar extractor could turn into a path outside its folder."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"unsafe sample key {key!r}: use 1-80 characters of [A-Za-z0-9_-]")


def sample_key(recording_id: str, start: int) -> str:
    """``<recording_id>_<start:010d>``; ``ValueError`` when not a safe tar key."""
    key = f"{recording_id}_{int(start):010d}"
    validate_key(key)
    return key


def split_member(name: str, schema: str = "raw") -> tuple[str, str]:
    """``(key, extension)`` of a member name; :class:`SampleError` for anything unexpected."""
    m = _MEMBER_RE.match(name)
    if not m or m["ext"] not in SCHEMAS[schema]:
        allowed = ", ".join(SCHEMAS[schema])
        raise SampleError(
            f"unexpected tar member name {name!r}: a {schema} shard holds KEY.<{allowed}> "
            "with KEY of 1-80 characters [A-Za-z0-9_-]"
        )
    return m["key"], m["ext"]


def parse_npy_header(prefix: bytes, size: int, rule: NpyRule, what: str) -> NpyHeader:
    """Check a ``.npy`` header (``prefix`` holds at least all of it) against ``rule`` and the
    member's ``size``; nothing is allocated from the header's claims."""
    fh = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                fh, max_header_size=MAX_NPY_HEADER
            )
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                fh, max_header_size=MAX_NPY_HEADER
            )
        else:
            raise SampleError(f"{what}: .npy version {version} (write it with numpy.save)")
    except SampleError:
        raise
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:  # numpy's header errors
        raise SampleError(f"{what}: not a valid .npy header ({exc})") from None
    if dtype.hasobject:
        raise SampleError(f"{what}: object dtype {dtype} (a pickle): refused, never unpickled")
    if dtype.name not in rule.dtypes:
        raise SampleError(f"{what}: dtype {dtype} (allowed: {sorted(rule.dtypes)})")
    if (rule.ndim is not None and len(shape) != rule.ndim) or not all(
        isinstance(d, int) and d >= 0 for d in shape
    ):
        raise SampleError(f"{what}: shape {shape} (expected {rule.ndim} dimensions)")
    n = 1
    for d in shape:  # Python integers: a 2^31 x 2^31 header cannot overflow
        n *= d
    offset = fh.tell()
    if offset + n * dtype.itemsize != size:
        raise SampleError(
            f"{what}: header says {shape} {dtype} = {n * dtype.itemsize} bytes, the member "
            f"holds {size - offset}: truncated or forged"
        )
    return NpyHeader(tuple(shape), dtype, bool(fortran), offset)


def npy_array(data: bytes, rule: NpyRule, what: str = "npy member") -> np.ndarray:
    """A checked ``.npy`` member's array, a read-only view of ``data`` (no copy, no pickle)."""
    h = parse_npy_header(data[: MAX_NPY_HEADER + 16], len(data), rule, what)
    n = int(np.prod(h.shape, dtype=np.int64)) if h.shape else 1
    a = np.frombuffer(data, dtype=h.dtype, count=n, offset=h.offset)
    return a.reshape(h.shape, order="F" if h.fortran else "C")


def npy_load(data: bytes, rule: NpyRule | None = None) -> np.ndarray:
    """``.npy`` bytes -> array (a read-only view of ``data``), never unpickling: the header
    is checked first (object dtypes, dtypes outside ``rule`` (default: any of
    :data:`SCHEMAS`) and shapes that do not match the byte count raise ``ValueError``)."""
    return npy_array(data, rule or ANY_NPY)


__all__ = [
    "ANY_NPY",
    "MAX_NPY_HEADER",
    "N_SENSOR_TYPES",
    "SCHEMAS",
    "NpyHeader",
    "NpyRule",
    "SampleError",
    "npy_array",
    "npy_load",
    "parse_npy_header",
    "sample_key",
    "split_member",
    "validate_key",
]
