"""One training sample as WebDataset tar members, and back. No pickles anywhere.

Members of sample ``KEY`` (``KEY`` = ``<recording_id>_<start sample, 10 digits>``)::

    KEY.signal.npy       (C, T) float16 (default) or float32, normalised (spec §2.11)
    KEY.sensors.npy      (C, 6) float32: position (normalised per group, spec §2.6) + orientation
    KEY.sensor_type.npy  (C,) int8: EEG 0, MAG 1, GRAD 2
    KEY.json             metadata (UTF-8 JSON object, see :func:`sample_metadata`)

``.npy`` members are written with ``allow_pickle=False`` and must hold plain numeric
dtypes; :func:`decode_sample` reads them with ``allow_pickle=False`` (webdataset's own
``npy`` decoder also calls ``numpy.lib.format.read_array`` without pickles).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np

from . import sample_check

MEMBERS = ("signal.npy", "sensors.npy", "sensor_type.npy", "json")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_ALLOWED_DTYPES = {"float16", "float32", "int8"}
_ANY_RULE = sample_check.NpyRule(frozenset(_ALLOWED_DTYPES), None)


def sample_key(recording_id: str, start: int) -> str:
    """``<recording_id>_<start:010d>``; ``ValueError`` when not a safe tar key."""
    key = f"{recording_id}_{int(start):010d}"
    validate_key(key)
    return key


def validate_key(key: str) -> None:
    """Keys are 1-80 chars of ``[A-Za-z0-9_-]``: no dots (WebDataset splits on the first dot),
    no slashes, nothing that a tar extractor could turn into a path outside its folder."""
    if not _KEY_RE.match(key):
        raise ValueError(f"unsafe sample key {key!r}: use 1-80 characters of [A-Za-z0-9_-]")


def split_member(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a shard member name; ``ValueError`` for anything unexpected."""
    return sample_check.split_member(name, "raw")


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as ``.npy`` bytes (little-endian, C order, no pickle)."""
    a = np.ascontiguousarray(a)
    if a.dtype.name not in _ALLOWED_DTYPES:
        raise ValueError(f"refusing to write dtype {a.dtype} (allowed: {_ALLOWED_DTYPES})")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a.astype(a.dtype.newbyteorder("<")), allow_pickle=False)
    return buf.getvalue()


def npy_loads(data: bytes) -> np.ndarray:
    """Read ``.npy`` bytes without ever unpickling: the header is checked first (object
    dtypes, other dtypes and shapes that do not match the byte count raise ``ValueError``)."""
    return sample_check.npy_array(data, _ANY_RULE).copy()


def encode_sample(
    key: str,
    signal: np.ndarray,
    sensors: np.ndarray,
    sensor_type: np.ndarray,
    meta: dict[str, Any],
) -> list[tuple[str, bytes]]:
    """The tar members ``[(name, bytes), ...]`` of one sample, in a fixed order."""
    validate_key(key)
    c = signal.shape[0]
    if sensors.shape != (c, 6) or sensor_type.shape != (c,):
        raise ValueError(
            f"sample {key}: signal {signal.shape}, sensors {sensors.shape} and sensor_type "
            f"{sensor_type.shape} disagree on the channel count"
        )
    body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return [
        (f"{key}.signal.npy", npy_bytes(signal)),
        (f"{key}.sensors.npy", npy_bytes(sensors.astype(np.float32))),
        (f"{key}.sensor_type.npy", npy_bytes(sensor_type.astype(np.int8))),
        (f"{key}.json", body),
    ]


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode a raw WebDataset sample (``{"__key__": ..., "signal.npy": bytes, ...}``).

    Returns ``{"__key__", "signal", "sensors", "sensor_type", "meta"}`` with numpy arrays and
    the metadata dict. Use as ``WebDataset(urls).map(decode_sample)`` (no ``.decode()``).
    """
    out: dict[str, Any] = {"__key__": sample["__key__"]}
    for ext in MEMBERS:
        if ext not in sample:
            raise ValueError(f"sample {sample.get('__key__')!r} lacks its {ext} member")
    out["signal"] = npy_loads(sample["signal.npy"])
    out["sensors"] = npy_loads(sample["sensors.npy"])
    out["sensor_type"] = npy_loads(sample["sensor_type.npy"])
    out["meta"] = json.loads(sample["json"])
    return out
