"""The sample format: one training sample as WebDataset tar members, written and read here.

Members of sample ``KEY`` (1-80 characters of ``[A-Za-z0-9_-]``: no dots, WebDataset splits
the extension at the first one; no slashes) in the two shard kinds (:data:`SCHEMAS`)::

    raw (brainomni.pack)      KEY.json             metadata (UTF-8 JSON object)
                              KEY.sensor_type.npy  (C,) int8: EEG 0, MAG 1, GRAD 2
                              KEY.sensors.npy      (C, 6) float32: position + orientation
                              KEY.signal.npy       (C, T) float16 (default) or float32
    tokens (brainomni.tokenize)
                              KEY.json             metadata (source key, recording, ...)
                              KEY.tokens.npy       (S, W, Q) int16 (or int32) codebook indices

One dtype set (:data:`SCHEMAS`) for writing and reading; ``.npy`` members are written with
``allow_pickle=False`` (little-endian, C order) and read by their checked header alone.

**Writing**: :class:`SampleWriter` is ``webdataset.TarWriter`` (members in sorted extension
order, as above) with fixed member metadata (mtime 0, uid/gid 0, no user or group names,
mode 0444, plain USTAR headers), so the same samples give byte-identical shards; every
sample is validated against its schema before a byte is written. A user reads our shards
with plain webdataset: ``webdataset.WebDataset(url).map(decode_sample)`` (or ``.decode()``:
its ``npy`` decoder reads without pickles; never enable its ``pyd``/``pickle`` decoders on
shards you did not write).

**Reading** (the loader, ``verify``, the labelled sets: :func:`iter_samples`) does not use
webdataset's tar reader: that reader reads every member whole into memory before a decoder
sees it (``webdataset.tariterators``), which is what a hostile member exploits, and it cannot
skip the members of samples already delivered (exact resume) nor hash the stream as it is
checked. Nothing in a shard is trusted:

* the tar is read as a stream (``tarfile`` mode ``r|``) and every member's size is checked
  against its limit *before* any of its bytes is read; an unknown, oversize, duplicated or
  non-regular member rejects the shard without being read; tar extension headers (pax,
  GNU long names) larger than :data:`MAX_EXT_HEADER` are refused before ``tarfile`` would
  read them whole;
* a ``.npy`` member is judged by its header alone (``numpy.lib.format.read_magic`` /
  ``read_array_header_*``, never ``allow_pickle``): object dtypes (pickles), other dtypes,
  other ranks, and a shape whose byte count (``prod(shape) * itemsize``, in Python integers)
  differs from what the member holds are refused before anything is allocated;
* members a caller does not need (every signal when verifying, unwanted samples when
  loading) are skipped by reading and dropping bounded chunks (:attr:`Limits.chunk_bytes`),
  never materialised whole; small members (``json``, ``sensors``, ``sensor_type``) are
  always read (bounded by their limits) and checked;
* a sample's members must be consecutive and complete, and agree on the channel count;
* a damaged header or a missing end-of-archive marker is an error (``tarfile`` alone
  would end the archive there silently).

Failures raise :class:`SampleError` (a ``ValueError``) naming the shard, the member and
what to do; tar damage raises ``tarfile.TarError`` or ``EOFError``.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

MAX_EXT_HEADER = 64 * 1024  # pax / GNU long-name headers (ours are plain USTAR: none)
MAX_NPY_HEADER = 64 * 1024
_MEMBER_RE = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,80})\.(?P<ext>[a-z0-9_]+(?:\.[a-z0-9_]+)*)$")
_EXT_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class SampleError(ValueError):
    """A shard member or sample that breaks the sample format (the shard is rejected)."""


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
_ALWAYS_READ = {"json", "sensors.npy", "sensor_type.npy"}  # small: bounded by the limits
N_SENSOR_TYPES = 3  # EEG 0, MAG 1, GRAD 2


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data


@dataclass
class Sample:
    """One checked sample: ``members`` holds bytes of the members read (see iter_samples)."""

    index: int
    key: str
    headers: dict[str, NpyHeader] = field(default_factory=dict)
    members: dict[str, bytes | bytearray] = field(default_factory=dict)
    meta: dict[str, Any] | None = None


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


# --------------------------------------------------------------------------- keys


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


# --------------------------------------------------------------------------- writing


def npy_bytes(a: np.ndarray, rule: NpyRule | None = None) -> bytes:
    """``a`` as ``.npy`` bytes (little-endian, C order, no pickle); its dtype must be one of
    ``rule``'s (default: any dtype of :data:`SCHEMAS`)."""
    rule = rule or ANY_NPY
    a = np.ascontiguousarray(a)
    if a.dtype.name not in rule.dtypes:
        raise ValueError(f"refusing to write dtype {a.dtype} (allowed: {sorted(rule.dtypes)})")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a.astype(a.dtype.newbyteorder("<")), allow_pickle=False)
    return buf.getvalue()


def json_bytes(meta: dict[str, Any]) -> bytes:
    """A sample's ``json`` member: compact, sorted keys, UTF-8."""
    if not isinstance(meta, dict):
        raise ValueError(f"sample metadata must be a dict, got {type(meta).__name__}")
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def encode_sample(
    key: str,
    signal: np.ndarray,
    sensors: np.ndarray,
    sensor_type: np.ndarray,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A raw sample as a WebDataset sample dict ``{"__key__": key, ext: bytes, ...}``."""
    validate_key(key)
    c = signal.shape[0]
    if signal.ndim != 2 or sensors.shape != (c, 6) or sensor_type.shape != (c,):
        raise ValueError(
            f"sample {key}: signal {signal.shape}, sensors {sensors.shape} and sensor_type "
            f"{sensor_type.shape} disagree on the channel count"
        )
    rules = SCHEMAS["raw"]
    return {
        "__key__": key,
        "signal.npy": npy_bytes(signal, rules["signal.npy"]),
        "sensors.npy": npy_bytes(sensors.astype(np.float32), rules["sensors.npy"]),
        "sensor_type.npy": npy_bytes(sensor_type.astype(np.int8), rules["sensor_type.npy"]),
        "json": json_bytes(meta),
    }


def encode_tokens(key: str, tokens: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """A token sample (codebook indices (S, W, Q)) as a WebDataset sample dict."""
    validate_key(key)
    if tokens.ndim != 3 or min(tokens.shape) < 1:
        raise ValueError(f"sample {key}: tokens must be a non-empty (S, W, Q), got {tokens.shape}")
    return {
        "__key__": key,
        "tokens.npy": npy_bytes(tokens, SCHEMAS["tokens"]["tokens.npy"]),
        "json": json_bytes(meta),
    }


def members(sample: dict[str, Any]) -> list[tuple[str, bytes]]:
    """``[(member name, bytes), ...]`` of a sample dict, in the order :class:`SampleWriter`
    writes them (sorted extensions, as ``webdataset.TarWriter`` does)."""
    key = sample["__key__"]
    return [(f"{key}.{ext}", sample[ext]) for ext in sorted(sample) if ext != "__key__"]


class SampleWriter:
    """Writes samples (dicts from :func:`encode_sample` / :func:`encode_tokens`) to a binary
    file object as one shard: ``webdataset.TarWriter`` with fixed member metadata, after
    checking each sample against ``schema`` (member names and ``.npy`` headers).

    Importing webdataset imports torch (seconds and ~200 MB per process, once); that is the
    price of writing with the field's own writer.
    """

    def __init__(self, fileobj: Any, schema: str = "raw") -> None:
        import webdataset

        if schema not in SCHEMAS:
            raise ValueError(f"unknown shard schema {schema!r} (one of {sorted(SCHEMAS)})")
        self.schema = schema
        self.samples = 0
        self.bytes = 0  # member payload bytes (the tar adds headers and padding)
        self._keys: set[str] = set()
        self._tw = webdataset.TarWriter(
            fileobj, user="", group="", mode=0o444, mtime=0, encoder=False, compress=False
        )

    def write(self, sample: dict[str, Any]) -> None:
        self._check(sample)
        self.bytes += self._tw.write(sample)
        self.samples += 1

    def _check(self, sample: dict[str, Any]) -> None:
        key = sample.get("__key__")
        validate_key(key)
        if key in self._keys:
            raise ValueError(f"sample key {key!r} written twice in one shard")
        rules = SCHEMAS[self.schema]
        exts = {k for k in sample if k != "__key__"}
        if exts != set(rules):
            raise ValueError(f"sample {key!r}: members {sorted(exts)}, expected {sorted(rules)}")
        for ext, rule in rules.items():
            blob = sample[ext]
            if not isinstance(blob, (bytes, bytearray)):
                raise ValueError(f"sample {key!r}: {ext} must be bytes (encode it first)")
            if rule is not None:
                parse_npy_header(bytes(blob[: MAX_NPY_HEADER + 16]), len(blob), rule, ext)
        self._keys.add(key)

    def close(self) -> None:
        self._tw.close()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- decoding


ANY_NPY = NpyRule(
    frozenset(d for rules in SCHEMAS.values() for r in rules.values() if r for d in r.dtypes),
    None,
)


def npy_load(data: bytes, rule: NpyRule | None = None) -> np.ndarray:
    """``.npy`` bytes -> array (a read-only view of ``data``), never unpickling: the header
    is checked first (object dtypes, dtypes outside ``rule`` (default: any of
    :data:`SCHEMAS`) and shapes that do not match the byte count raise ``ValueError``)."""
    return npy_array(data, rule or ANY_NPY)


def decode_raw(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """A raw sample's members (``{ext: bytes}``) -> ``{key, signal, sensors, sensor_type, n}``."""
    rules = SCHEMAS["raw"]
    for ext in ("signal.npy", "sensors.npy", "sensor_type.npy"):
        if ext not in m:
            raise ValueError(f"sample {key!r} lacks its {ext} member")
    sig = npy_load(m["signal.npy"], rules["signal.npy"])
    sensors = npy_load(m["sensors.npy"], rules["sensors.npy"])
    types = npy_load(m["sensor_type.npy"], rules["sensor_type.npy"])
    c = sig.shape[0]
    if sensors.shape != (c, 6) or types.shape != (c,):
        raise ValueError(f"sample {key!r}: inconsistent shapes")
    return {"key": key, "signal": sig, "sensors": sensors, "sensor_type": types, "n": c}


def decode_tokens(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """A token sample's members -> ``{key, tokens (S, W, Q), n: 0}``."""
    if "tokens.npy" not in m:
        raise ValueError(f"sample {key!r} lacks its tokens.npy member")
    tok = npy_load(m["tokens.npy"], SCHEMAS["tokens"]["tokens.npy"])
    return {"key": key, "tokens": tok, "n": 0}


def decode_meta(key: str, m: dict[str, bytes]) -> dict[str, Any]:
    """A raw sample plus its JSON metadata (``meta``)."""
    d = decode_raw(key, m)
    d["meta"] = _json_object(m.get("json", b"{}"), key)
    return d


def _json_object(data: bytes, key: str) -> dict[str, Any]:
    try:
        meta = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"sample {key!r}: json is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"sample {key!r}: json must be an object")
    return meta


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode a raw WebDataset sample (``{"__key__": ..., "signal.npy": bytes, ...}``), for
    ``webdataset.WebDataset(urls).map(decode_sample)`` (no ``.decode()``); raw and token
    samples. Returns the arrays by member name without ``.npy`` plus ``meta``."""
    key = sample.get("__key__")
    exts = {k for k in sample if not k.startswith("__")}
    schema = next((n for n, rules in SCHEMAS.items() if set(rules) == exts), None)
    if schema is None:
        raise ValueError(f"sample {key!r}: members {sorted(exts)} match no shard schema")
    out: dict[str, Any] = {"__key__": key}
    for ext, rule in SCHEMAS[schema].items():
        if rule is not None:
            out[ext.removesuffix(".npy")] = npy_load(sample[ext], rule).copy()
    out["meta"] = _json_object(sample["json"], key)
    return out


DECODERS: dict[str, Callable[[str, dict], dict[str, Any]]] = {
    "raw": decode_raw,
    "tokens": decode_tokens,
    "raw+meta": decode_meta,
}
SCHEMA_OF: dict[Callable, str] = {decode_raw: "raw", decode_meta: "raw", decode_tokens: "tokens"}


__all__ = [
    "ANY_NPY",
    "DECODERS",
    "LIMITS",
    "SCHEMAS",
    "SCHEMA_OF",
    "Limits",
    "NpyRule",
    "Sample",
    "SampleError",
    "SampleWriter",
    "count_samples",
    "decode_meta",
    "decode_raw",
    "decode_sample",
    "decode_tokens",
    "encode_sample",
    "encode_tokens",
    "iter_samples",
    "json_bytes",
    "members",
    "npy_array",
    "npy_bytes",
    "npy_load",
    "parse_npy_header",
    "sample_key",
    "split_member",
    "validate_key",
]
