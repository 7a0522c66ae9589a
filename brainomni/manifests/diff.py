"""Comparing two manifests of one kind: sources, hours, configs and shards of signal
manifests; tokenizer, source manifest, splits and shards of token manifests."""

from __future__ import annotations

from typing import Any

from ..formats.manifest import manifest_kind


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences in sources, hours, configs and shards (empty: none);
    for two token manifests: tokenizer, source manifest, splits and shards."""
    ka, kb = manifest_kind(a), manifest_kind(b)
    if ka != kb:
        return [f"kind: {ka} -> {kb} (a signal and a token manifest)"]
    if ka == "tokens":
        return _diff_tokens(a, b)
    out: list[str] = []
    sa = {s["dataset"]: s for s in a["sources"]}
    sb = {s["dataset"]: s for s in b["sources"]}
    for ds in sorted(sa.keys() - sb.keys()):
        out.append(f"source removed: {ds}")
    for ds in sorted(sb.keys() - sa.keys()):
        out.append(f"source added: {ds} {sb[ds]['versions']}")
    for ds in sorted(sa.keys() & sb.keys()):
        for k in ("versions", "recordings", "subjects", "checksum"):
            if sa[ds][k] != sb[ds][k]:
                out.append(f"source {ds}: {k} {sa[ds][k]} -> {sb[ds][k]}")
    for section in ("packing", "splitting", "cleaning"):
        fa, fb = _flat(a[section]), _flat(b[section])
        for k in sorted(fa.keys() | fb.keys()):
            if fa.get(k) != fb.get(k):
                out.append(f"{section}: {k} {fa.get(k)!r} -> {fb.get(k)!r}")
    for sp in sorted(a["splits"].keys() | b["splits"].keys()):
        xa, xb = a["splits"].get(sp, {}), b["splits"].get(sp, {})
        for k in ("samples", "hours", "subjects", "recordings"):
            if xa.get(k) != xb.get(k):
                out.append(f"split {sp}: {k} {xa.get(k)} -> {xb.get(k)}")
        da, db = xa.get("by_dataset", {}), xb.get("by_dataset", {})
        for ds in sorted(da.keys() | db.keys()):
            ha, hb = da.get(ds, {}).get("hours", 0.0), db.get(ds, {}).get("hours", 0.0)
            if ha != hb:
                out.append(f"split {sp}: {ds} hours {ha} -> {hb}")
    ta, tb = a["totals"], b["totals"]
    for k in ("shards", "bytes", "samples"):
        if ta[k] != tb[k]:
            out.append(f"totals: {k} {ta[k]} -> {tb[k]}")
    if [s["sha256"] for s in a["shards"]] != [s["sha256"] for s in b["shards"]]:
        out.append("shards: content differs")
    return out


def _diff_tokens(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for section in ("tokenizer", "source"):
        fa, fb = _flat(a.get(section) or {}), _flat(b.get(section) or {})
        for k in sorted(fa.keys() | fb.keys()):
            if fa.get(k) != fb.get(k):
                out.append(f"{section}: {k} {fa.get(k)!r} -> {fb.get(k)!r}")
    for sp in sorted(a["splits"].keys() | b["splits"].keys()):
        xa, xb = a["splits"].get(sp, {}), b["splits"].get(sp, {})
        for k in ("samples", "shards"):
            if xa.get(k) != xb.get(k):
                out.append(f"split {sp}: {k} {xa.get(k)} -> {xb.get(k)}")
    if [s["sha256"] for s in a["shards"]] != [s["sha256"] for s in b["shards"]]:
        out.append("shards: content differs")
    return out


__all__ = ["diff"]
