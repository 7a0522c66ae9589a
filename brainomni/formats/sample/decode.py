"""Decoding checked members into arrays (read-only views, never unpickled): the loader's
decoders (:data:`DECODERS`) and :func:`decode_sample` for plain webdataset pipelines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .schema import SCHEMAS, npy_load


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


__all__ = ["DECODERS", "SCHEMA_OF", "decode_meta", "decode_raw", "decode_sample", "decode_tokens"]
