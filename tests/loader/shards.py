"""Small synthetic shards, written the way ``brainomni.pack`` writes them (no corpus needed),
and hostile variants of them."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

from brainomni.formats.manifest import content_hash
from brainomni.formats.sample import encode_sample, members


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """The packer's fixed member metadata (webdataset.TarWriter as SampleWriter sets it)."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, 0, 0o444, 0, 0, "", ""
    return ti


def sample_members(key: str, c: int = 4, t: int = 16, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    sig = rng.standard_normal((c, t)).astype(np.float16)
    sensors = rng.standard_normal((c, 6)).astype(np.float32)
    types = (np.arange(c) % 3).astype(np.int8)
    return members(encode_sample(key, sig, sensors, types, {"recording_id": key, "start": 0}))


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A USTAR tar of ``members`` with the packer's fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in members:
            tar.addfile(_tarinfo(name, len(blob)), io.BytesIO(blob))
    return buf.getvalue()


def good_members(n: int = 2, prefix: str = "rec", **kw) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        out += sample_members(f"{prefix}_{i:010d}", seed=i, **kw)
    return out


def npy_with_header(header: dict, data: bytes) -> bytes:
    """A ``.npy`` member with a hand-written header (version 1.0) and arbitrary data."""
    h = repr(header).encode("latin1")
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def write_manifest(root: Path, shards: dict[str, tuple[bytes, int]], split: str = "train"):
    """Write each ``{name: (tar bytes, samples)}`` under ``root`` and return a raw manifest
    dict that names their true sha256 and byte counts."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (data, samples) in shards.items():
        (root / f"{name}.tar").write_bytes(data)
        rows.append(
            {
                "path": f"{name}.tar",
                "split": split,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "samples": samples,
            }
        )
    m = {"format": "brainomni.manifest/1", "shards_root": str(root), "shards": rows}
    m["content_hash"] = content_hash(m)
    return m
