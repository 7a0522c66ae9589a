"""Writing samples: encoding (``.npy`` without pickles, compact JSON) and :class:`SampleWriter`.

:class:`SampleWriter` is ``webdataset.TarWriter`` (members in sorted extension order) with
fixed member metadata (mtime 0, uid/gid 0, no user or group names, mode 0444, plain USTAR
headers), so the same samples give byte-identical shards; every sample is validated against
its schema (:data:`~.schema.SCHEMAS`) before a byte is written.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from .schema import ANY_NPY, MAX_NPY_HEADER, SCHEMAS, NpyRule, parse_npy_header, validate_key


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


__all__ = ["SampleWriter", "encode_sample", "encode_tokens", "json_bytes", "members", "npy_bytes"]
