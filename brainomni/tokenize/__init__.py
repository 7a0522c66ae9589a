"""Tokenize once: run a trained tokenizer over 30-s shards and publish token shards.

For every shard of the source manifest (the splits asked for), one token shard with the same
path under ``DEST`` holds, per sample, ``KEY.tokens.npy`` (int16 codebook indices (S, W, Q),
W = 160 for 30 s with overlap 0.25) and ``KEY.json`` (source key, recording, dataset,
split, channels, the tokenizer's weights sha256). A shard's ``.json`` index is written after
its tar (a rerun skips finished shards with the same completion key: tokenizer, source
manifest, source shard and overlap, see :attr:`TokenizeJob.completion_key`); ``DEST/manifest.json``
(format ``brainomni.token-manifest/1``, :mod:`brainomni.formats.manifest`) is written last and
names the tokenizer's hash and the source manifest's content hash; ``brainomni publish`` then
publishes it under a name and version with its card. Samples are written by the sample format
(:mod:`brainomni.formats.sample`) and every file through :mod:`brainomni.io.commit`. Executor-agnostic: :func:`tokenize_corpus` takes a
``map_fn`` or an ``executor`` of the stage core: the shards are the units of
:class:`TokenizeStage`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..formats.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TOKEN_MANIFEST_FORMAT,
    content_hash,
    read_manifest,
    write_manifest,
)
from ..formats.sample import SampleWriter, encode_tokens
from ..io.commit import AtomicFile, atomic_write_bytes
from ..io.fs import get_fs, join_url
from ..io.redact import redact
from ..pipeline import ALREADY_DONE, MapExecutor, Stage, StageRow, run_stage
from ..pipeline.run import raise_if_failed

log = logging.getLogger(__name__)

TOKEN_INDEX_FORMAT = "brainomni.token-shard/1"
_MAX_INDEX_BYTES = 1 << 20  # a token shard's index is a few hundred bytes


@dataclass(frozen=True)
class TokenizeJob:
    """Everything one shard task needs (plain data: shipped to Ray workers by value)."""

    tokenizer: str  # export folder (local path reachable by every worker)
    tokenizer_sha256: str
    src_url: str
    src_sha256: str | None
    src_samples: int
    split: str
    path: str  # relative path of the shard (same as in the source manifest)
    dest: str
    batch_size: int = 16
    overlap_ratio: float = 0.25
    verify_sha256: bool = True
    storage_options: dict | None = None
    dest_storage_options: dict | None = None
    source_manifest_hash: str = ""  # content hash of the signal manifest the shard is from

    @property
    def completion_key(self) -> str:
        """What a finished token shard must have been made from to be reused by a rerun: the
        tokenizer's weights, the source manifest, the source shard's bytes and the overlap.
        Anything else changed (a new manifest version, a re-packed shard) redoes the shard."""
        body = {
            "format": TOKEN_INDEX_FORMAT,
            "tokenizer_sha256": self.tokenizer_sha256,
            "source_manifest": self.source_manifest_hash,
            "source_sha256": self.src_sha256,
            "source_path": self.path,
            "overlap_ratio": self.overlap_ratio,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


_MODELS: dict[str, Any] = {}


def _model(path: str):
    if path not in _MODELS:
        from ..train.export import load_export

        m = load_export(path)
        if not hasattr(m, "quantizer"):
            raise ValueError(f"{path} is not an exported tokenizer")
        _MODELS[path] = m
    return _MODELS[path]


def tokenize_samples(
    model: Any, samples: list[dict[str, Any]], batch_size: int, overlap_ratio: float
) -> list[np.ndarray]:
    """Indices (S, W, Q) for each sample, batched by equal channel count (no padding)."""
    import torch

    out: list[np.ndarray | None] = [None] * len(samples)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s["n"], []).append(i)
    for _, idx in sorted(groups.items()):
        for a in range(0, len(idx), batch_size):
            part = idx[a : a + batch_size]
            x = torch.from_numpy(np.stack([samples[i]["signal"] for i in part]).astype(np.float32))
            pos = torch.from_numpy(np.stack([samples[i]["sensors"] for i in part]))
            st = torch.from_numpy(
                np.stack([samples[i]["sensor_type"] for i in part]).astype(np.int64)
            )
            _, ind = model.tokenize(x, pos, st, None, overlap_ratio)
            for j, i in enumerate(part):
                out[i] = ind[j].numpy().astype(np.int16)
    return out  # type: ignore[return-value]


def finished_shard(job: TokenizeJob) -> dict[str, Any] | None:
    """The index of ``job``'s token shard when it is finished with the same completion key
    (its completion marker), else None."""
    idx_url = join_url(job.dest, job.path)[: -len(".tar")] + ".json"
    fs, idx_path = get_fs(idx_url, job.dest_storage_options)
    if not fs.exists(idx_path):
        return None
    if fs.size(idx_path) > _MAX_INDEX_BYTES:  # not ours: redo the shard
        return None
    try:
        old = json.loads(fs.cat_file(idx_path))
    except ValueError:  # torn or foreign: redo the shard
        old = None
    if isinstance(old, dict) and old.get("completion_key") == job.completion_key:
        return old
    log.info("%s: made from another tokenizer, manifest or source shard; redone", job.path)
    return None


@dataclass
class TokenizeStage(Stage):
    """Tokenize each source shard (units: :class:`TokenizeJob`, key: the shard's path)."""

    name: ClassVar[str] = "tokenize"
    expected_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, ValueError)
    fixes: ClassVar[Mapping[str, str]] = {
        "ShardFailed": "the source shard is unreadable or does not match its manifest entry "
        "(sha256): re-pack or re-publish it, or pass the manifest it belongs to",
        "OSError": "the source shard or the destination could not be read/written: rerun",
        "ValueError": "the source shard holds a sample the reader refuses: re-pack it",
    }

    dest: str = ""
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)
    jobs: Sequence[TokenizeJob] = ()

    def __post_init__(self) -> None:
        from ..loader.reader import ShardFailed

        self.expected_errors = (ShardFailed, OSError, ValueError)

    def units(self) -> Sequence[TokenizeJob]:
        return self.jobs

    def key(self, unit: TokenizeJob) -> str:
        return unit.path

    def for_workers(self) -> TokenizeStage:
        return replace(self, jobs=())

    def reuse(self, unit: TokenizeJob, prev: Any) -> bool:
        return False  # the token shard's own marker (completion key) is checked by run_unit

    def run_unit(self, unit: TokenizeJob, *, attempt: int, worker: str) -> StageRow:
        index = finished_shard(unit)
        reason = ALREADY_DONE if index is not None else ""
        if index is None:
            index = tokenize_shard(unit)
        return StageRow(
            key=unit.path,
            outcome="ok",
            reason=reason,
            output=unit.path,
            items=int(index.get("samples") or 0),
            bytes_out=int(index.get("bytes") or 0),
            detail=json.dumps(index, sort_keys=True),
            worker=worker,
        )


def tokenize_shard(job: TokenizeJob) -> dict[str, Any]:
    """Tokenize one shard and publish it (tar, then its index); the index dict."""
    from ..formats.sample import decode_meta
    from ..loader.reader import ReadConfig, ShardSource, read_shard

    old = finished_shard(job)
    if old is not None:
        return old
    tar_url = join_url(job.dest, job.path)
    idx_url = tar_url[: -len(".tar")] + ".json"
    src = ShardSource(job.src_url, job.src_sha256, job.src_samples)
    got = read_shard(
        src, None, decode_meta, ReadConfig(verify_sha256=job.verify_sha256), job.storage_options
    )
    samples = [got[i] for i in sorted(got)]
    tokens = tokenize_samples(_model(job.tokenizer), samples, job.batch_size, job.overlap_ratio)
    with (
        AtomicFile(tar_url, job.dest_storage_options, sha256=True) as fh,
        SampleWriter(fh, "tokens") as tar,
    ):
        for s, tok in zip(samples, tokens, strict=True):
            m = s["meta"]
            meta = {
                "source_key": s["key"],
                "recording_id": m.get("recording_id"),
                "dataset": m.get("dataset"),
                "subject": m.get("subject"),
                "split": job.split,
                "start": m.get("start"),
                "n_channels": s["n"],
                "tokenizer_sha256": job.tokenizer_sha256,
                "shape": list(tok.shape),
            }
            tar.write(encode_tokens(s["key"], tok, meta))
    index = {
        "format": TOKEN_INDEX_FORMAT,
        "path": job.path,
        "split": job.split,
        "sha256": fh.hexdigest(),
        "bytes": fh.bytes,
        "samples": len(samples),
        "source_sha256": job.src_sha256,
        "tokenizer_sha256": job.tokenizer_sha256,
        "source_manifest_hash": job.source_manifest_hash,
        "completion_key": job.completion_key,
        "shape": list(tokens[0].shape) if tokens else None,
    }
    atomic_write_bytes(
        idx_url, json.dumps(index, sort_keys=True).encode(), job.dest_storage_options
    )
    log.info("tokenized %s: %d samples", job.path, len(samples))
    return index


def tokenize_corpus(
    tokenizer: str | Path,
    manifest: str | dict,
    dest: str,
    *,
    splits: Iterable[str] | None = None,
    batch_size: int = 16,
    overlap_ratio: float = 0.25,
    shards_root: str | None = None,
    verify_sha256: bool = True,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
    map_fn: Callable = map,
    executor: Any = None,
    progress_every_s: float = 10.0,
) -> dict[str, Any]:
    """Tokenize every shard (of ``splits``; default all) and write ``DEST/manifest.json``.

    The shards are the units of a :class:`TokenizeStage` run by ``executor`` (``local``,
    ``ray`` or an executor object) or by any ``map_fn``: ledger and summary under ``DEST``;
    shards that fail are ledger rows and the run stops with
    :class:`~brainomni.pipeline.StageFailed` before the manifest (a rerun redoes them)."""
    from ..train.export import file_sha256

    try:
        src = read_manifest(manifest, storage_options, formats=(MANIFEST_FORMAT,))
    except ValueError as exc:
        raise ValueError(f"tokenize reads a signal shard manifest: {exc}") from None
    tok_dir = str(Path(tokenizer).resolve())
    cfg = json.loads((Path(tok_dir) / "config.json").read_text())
    if cfg.get("kind") != "tokenizer":
        raise ValueError(f"{tokenizer} is not an exported tokenizer (kind {cfg.get('kind')!r})")
    sha = file_sha256(Path(tok_dir) / "model.safetensors")
    root = shards_root or src["shards_root"]
    wanted = set(splits) if splits else None
    jobs = [
        TokenizeJob(
            tok_dir,
            sha,
            join_url(root, s["path"]),
            s.get("sha256"),
            int(s["samples"]),
            s["split"],
            s["path"],
            dest,
            batch_size,
            overlap_ratio,
            verify_sha256,
            storage_options,
            dest_storage_options,
            str(src.get("content_hash") or ""),
        )
        for s in src["shards"]
        if s.get("path") and (wanted is None or s["split"] in wanted)
    ]
    if not jobs:
        raise ValueError(f"no shards to tokenize (splits {sorted(wanted or [])})")
    stage = TokenizeStage(
        dest=dest, dest_storage_options=dict(dest_storage_options or {}), jobs=jobs
    )
    if executor is None and map_fn is not map:
        executor = MapExecutor(map_fn)
    result = run_stage(stage, executor, progress_every_s=progress_every_s)
    raise_if_failed(stage, result, "manifest.json")
    by_path = {r.key: json.loads(r.detail) for r in result.received}
    indices = [by_path[j.path] for j in jobs]
    splits_out: dict[str, dict[str, int]] = {}
    for ix in indices:
        sp = splits_out.setdefault(ix["split"], {"samples": 0, "shards": 0})
        sp["samples"] += ix["samples"]
        sp["shards"] += 1
    m = {
        "format": TOKEN_MANIFEST_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shards_root": redact(dest.rstrip("/")),
        "tokenizer": {
            "sha256": sha,
            "config": cfg.get("tokenizer_config"),
            "overlap_ratio": overlap_ratio,
        },
        "source": {
            "name": src.get("name"),
            "version": src.get("version"),
            "content_hash": src.get("content_hash"),
        },
        "splits": dict(sorted(splits_out.items())),
        "shards": [
            {k: ix[k] for k in ("path", "split", "sha256", "bytes", "samples", "shape")}
            for ix in indices
        ],
    }
    m["content_hash"] = content_hash(m)
    write_manifest(join_url(dest, MANIFEST_NAME), m, dest_storage_options)
    return m


__all__ = [
    "TOKEN_MANIFEST_FORMAT",
    "TokenizeJob",
    "TokenizeStage",
    "tokenize_corpus",
    "tokenize_samples",
    "tokenize_shard",
]
