"""Write one planned shard: read windows, normalise, reject, tar, hash, publish atomically.

Layout under the pack destination ``DEST`` (local folder or ``s3://``)::

    DEST/plan.json                       the frozen plan (written first)
    DEST/<split>/shard-000000.tar        WebDataset shard (deterministic bytes)
    DEST/<split>/shard-000000.json       its index, written after the tar: the shard exists
                                         only once this is there (resume skips it)
    DEST/index.json                      the pack index, written last (see :mod:`.run`)

Samples are encoded and written by the sample format (:mod:`brainomni.formats.sample`:
webdataset's TarWriter with fixed member metadata), so the same plan gives byte-identical
shards; the sha256 and byte count are computed while streaming. The tar is published with
:class:`brainomni.io.commit.AtomicFile` (its temporary file is named here, so that a rerun
can sweep a killed writer's), then its index atomically.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections import Counter
from typing import Any

import numpy as np

from ..formats.sample import SampleWriter, encode_sample, sample_key
from ..io.commit import AtomicFile, atomic_write_bytes
from ..io.fs import get_fs, is_local, join_url, read_json
from ..records import SENSOR_TYPE_NAMES
from .config import PackConfig
from .plan import PackPlan, RecordingInfo, ShardSpec
from .windows import TYPES, mean_periodogram, normalise_window, qc_reason, window_starts

log = logging.getLogger(__name__)

INDEX_FORMAT = "brainomni.shard-index/1"
_READ_BYTES = 64 * 1024 * 1024  # signal read per block (float32)
TMP_PREFIX = ".tmp-shard-"  # + "<index:06d>-<random>.tar": a shard's tar while written


def temp_shard_dir(dest: str, split: str, dest_storage_options: dict | None = None) -> str:
    """Local folder of a shard's temporary tar while it is written: the split's own folder for
    a local ``dest`` (so the final rename is atomic), else a folder of this destination under
    the system temp dir (object stores: uploaded from there)."""
    fs, path = get_fs(join_url(dest, split), dest_storage_options)
    if is_local(fs):
        return path
    tag = hashlib.sha256(dest.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"brainomni-pack-{tag}", split)


def clean_temp_shards(
    dest: str, splits: list[str], dest_storage_options: dict | None = None
) -> list[str]:
    """Remove the temporary tars (``.tmp-shard-*.tar``) a killed pack left in this pack's own
    temp folders (:func:`temp_shard_dir` of each split); the paths removed. Nothing else is
    touched. Call it only when no other pack writes into ``dest``."""
    removed = []
    for split in sorted(set(splits)):
        folder = temp_shard_dir(dest, split, dest_storage_options)
        for p in sorted(glob.glob(os.path.join(glob.escape(folder), f"{TMP_PREFIX}*.tar"))):
            if os.path.isfile(p) and not os.path.islink(p):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
                    removed.append(p)
    return removed


def shard_urls(dest: str, spec: ShardSpec) -> tuple[str, str]:
    """``(tar URL, index URL)`` of a planned shard."""
    base = join_url(dest, spec.split, f"shard-{spec.index:06d}")
    return f"{base}.tar", f"{base}.json"


class _Recording:
    """One store opened for reading windows, with its sensor rows prepared once."""

    def __init__(self, info: RecordingInfo, config: PackConfig, storage_options: dict | None):
        from ..stores.recording import open_recording
        from .windows import normalise_positions

        self.info = info
        g = open_recording(info.uri, storage_options)
        self.signal = g["signal"]
        self.types = np.asarray(g["sensor_type"][:], dtype=np.int8)
        pos = np.asarray(g["sensor_pos"][:], dtype=np.float32)
        ori = np.asarray(g["sensor_ori"][:], dtype=np.float32)
        self.pos_norm: dict[str, Any] = {}
        if config.normalize_positions:
            pos, self.pos_norm = normalise_positions(pos, self.types)
        self.sensors = np.concatenate([pos, ori], axis=1).astype(np.float32)
        self.sensors_ok = bool(np.all(np.isfinite(self.sensors)))
        self.counts = {SENSOR_TYPE_NAMES[t]: int(np.sum(self.types == t)) for t in TYPES}
        self.eps = (config.eps_eeg, config.eps_meg, config.eps_meg)
        # [start, stop) output samples the recording marks bad (acquisition skips, BAD_*)
        sfreq = float(g.attrs.get("sfreq", 256.0))
        segs = (g.attrs.get("qc") or {}).get("bad_segments") or []
        self.bad_spans = [(int(a * sfreq), int(np.ceil(b * sfreq))) for a, b in segs]

    def overlaps_bad(self, start: int, window: int) -> bool:
        return any(a < start + window and start < b for a, b in self.bad_spans)

    def windows(self, starts: np.ndarray, window: int):
        """Yield ``(start, x_CT float32)`` reading the signal in bounded blocks."""
        c = self.signal.shape[0]
        per_block = max(1, _READ_BYTES // max(1, c * window * 4))
        for b in range(0, len(starts), per_block):
            blk = starts[b : b + per_block]
            a, z = int(blk[0]), int(blk[-1]) + window
            data = np.asarray(self.signal[:, a:z], dtype=np.float32)
            for s in blk:
                yield int(s), data[:, int(s) - a : int(s) - a + window]


def _meta(info: RecordingInfo, rec: _Recording, start: int, scales, config: PackConfig):
    return {
        "dataset": info.dataset,
        "dataset_version": info.dataset_version,
        "subject": info.subject,
        "session": info.session,
        "task": info.task,
        "run": info.run,
        "recording_id": info.recording_id,
        "split": info.split,
        "start": start,
        "n_times": config.window,
        "sfreq": config.sfreq,
        "modality": info.kind,
        "n_channels": info.n_channels,
        "channels": rec.counts,
        "scale": scales,
        "pos_norm": rec.pos_norm,
        "profile": config.profile,
        "pack_config_hash": config.hash,
    }


def write_shard(
    plan: PackPlan,
    shard: int,
    dest: str,
    *,
    plan_hash: str | None = None,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Write shard number ``shard`` of ``plan`` under ``dest``; its index dict.

    ``storage_options`` reach the recording stores, ``dest_storage_options`` the destination.
    With ``resume``, a shard whose index already exists for the same plan hash is not redone.
    """
    spec = plan.shards[shard]
    config = plan.config
    plan_hash = plan_hash or plan.hash
    tar_url, idx_url = shard_urls(dest, spec)
    if resume:
        old = read_json(idx_url, dest_storage_options)
        if old is not None and old.get("plan_hash") == plan_hash:
            return old
    tmp_dir = temp_shard_dir(dest, spec.split, dest_storage_options)
    # an earlier attempt at this shard that was killed (SIGKILL, lost node) left its temp file
    prefix = f"{TMP_PREFIX}{spec.index:06d}-"
    for old_tmp in glob.glob(os.path.join(glob.escape(tmp_dir), f"{prefix}*.tar")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old_tmp)
    temp = os.path.join(tmp_dir, f"{prefix}{uuid.uuid4().hex[:8]}.tar")
    with AtomicFile(tar_url, dest_storage_options, temp=temp, sha256=True) as fh:
        stats = _fill(plan, spec, fh, storage_options)
        if not stats["samples"]:
            fh.discard()  # an empty shard is not published (its index says so)
    index = {
        "format": INDEX_FORMAT,
        "split": spec.split,
        "index": spec.index,
        "path": f"{spec.split}/shard-{spec.index:06d}.tar" if stats["samples"] else None,
        "sha256": fh.hexdigest() if stats["samples"] else None,
        "bytes": fh.bytes if stats["samples"] else 0,
        "planned_bytes": spec.planned_bytes,
        "plan_hash": plan_hash,
        "pack_config_hash": config.hash,
        **stats,
    }
    atomic_write_bytes(idx_url, json.dumps(index, sort_keys=True).encode(), dest_storage_options)
    log.info("shard %s: %d samples, %d bytes", spec.name, stats["samples"], index["bytes"])
    return index


def shard_recording(info: Any, samples: int, windows: int) -> dict[str, Any]:
    """One recording's entry in a shard's index: its windows planned here and kept."""
    return {
        "recording_id": info.recording_id,
        "dataset": info.dataset,
        "subject": info.subject,
        "split": info.split,
        "kind": info.kind,
        "samples": int(samples),
        "windows": int(windows),
    }


def _fill(plan: PackPlan, spec: ShardSpec, out: AtomicFile, storage_options) -> dict:
    config = plan.config
    dtype = np.dtype(config.dtype)
    hist: Counter[int] = Counter()
    rejected: Counter[str] = Counter()
    recs: list[dict[str, Any]] = []
    spectra = {SENSOR_TYPE_NAMES[t]: np.zeros(config.spectrum_nfft // 2 + 1) for t in TYPES}
    spec_n = Counter()
    samples = 0
    with SampleWriter(out, "raw") as tar:
        for piece in spec.pieces:
            info = plan.recordings[piece.rec]
            rec = _Recording(info, config, storage_options)
            starts = window_starts(info.n_times, config.window, config.stride)
            starts = starts[piece.first : piece.first + piece.count]
            kept = 0
            for start, x in rec.windows(starts, config.window):
                reason = "nonfinite_positions" if not rec.sensors_ok else None
                if reason is None and rec.overlaps_bad(int(start), config.window):
                    reason = "bad_segment"
                reason = reason or qc_reason(x, rec.types, config.qc)
                if reason is None:
                    z, stds = normalise_window(x, rec.types, eps=rec.eps, return_std=True)
                    y = z.astype(dtype)
                    if not np.all(np.isfinite(y)):
                        reason = "float16_overflow"
                if reason is not None:
                    rejected[reason] += 1
                    continue
                scales = {SENSOR_TYPE_NAMES[t]: v for t, v in stds.items()}
                for t in TYPES:
                    rows = rec.types == t
                    if rows.any():
                        name = SENSOR_TYPE_NAMES[t]
                        spectra[name] += mean_periodogram(z[rows], config.spectrum_nfft)
                        spec_n[name] += 1
                key = sample_key(info.recording_id, start)
                meta = _meta(info, rec, start, scales, config)
                tar.write(encode_sample(key, y, rec.sensors, rec.types, meta))
                hist[info.n_channels] += 1
                kept += 1
                samples += 1
            recs.append(shard_recording(info, kept, len(starts)))
    return {
        "samples": samples,
        "seconds": samples * config.window_s,
        "channel_hist": {str(k): v for k, v in sorted(hist.items())},
        "rejected": dict(sorted(rejected.items())),
        "recordings": recs,
        "spectra": {
            k: {"n": int(spec_n[k]), "sum": [float(v) for v in spectra[k]]}
            for k in spectra
            if spec_n[k]
        },
    }
