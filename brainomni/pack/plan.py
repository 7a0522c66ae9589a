"""The pack plan: a frozen list of recordings and a deterministic cut into shards.

The plan is a pure function of (the stores' attributes, the pack config, the split config):
recordings are ordered by (split, recording id), windows by start, and shard boundaries are
chosen from each window's *planned* size (exact for the arrays, an upper bound for the JSON
and tar padding). Every shard task then writes a fixed set of windows, so parallel, serial
and resumed runs produce byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..io.fs import get_fs, is_local, to_url
from ..io.redact import redact
from ..records import EEG, GRAD, MAG
from ..splits import SplitConfig, assign_split
from .config import PackConfig
from .windows import window_starts

log = logging.getLogger(__name__)

PLAN_FORMAT = "brainomni.pack-plan/1"
_JSON_BUDGET = 1024  # bytes reserved for a sample's JSON member


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """What the pack needs from one committed store (read from its attributes)."""

    uri: str
    recording_id: str
    dataset: str
    dataset_version: str
    subject: str
    session: str
    task: str
    run: str
    modality: str
    source_checksum: str | None
    config_hash: str
    n_times: int
    sfreq: float
    n_eeg: int
    n_mag: int
    n_grad: int
    split: str = ""

    @property
    def n_channels(self) -> int:
        return self.n_eeg + self.n_mag + self.n_grad

    @property
    def kind(self) -> str:
        """``eeg``, ``meg`` or ``emeg`` from the sensor types present."""
        meg = self.n_mag + self.n_grad > 0
        return "emeg" if self.n_eeg and meg else ("meg" if meg else "eeg")


@dataclass(frozen=True, slots=True)
class Piece:
    """``count`` windows of recording ``rec`` (index into the plan) from window ``first``."""

    rec: int
    first: int
    count: int


@dataclass(frozen=True)
class ShardSpec:
    split: str
    index: int
    pieces: tuple[Piece, ...]
    planned_bytes: int

    @property
    def name(self) -> str:
        return f"{self.split}/shard-{self.index:06d}"


@dataclass
class PackPlan:
    config: PackConfig
    split_config: SplitConfig
    recordings: list[RecordingInfo]
    shards: list[ShardSpec]
    dropped: list[dict[str, Any]] = field(default_factory=list)  # recordings not packed

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "config": self.config.to_dict(),
            "config_hash": self.config.hash,
            "split_config": self.split_config.to_dict(),
            "split_config_hash": self.split_config.hash,
            "recordings": [_info_dict(r) for r in self.recordings],
            "shards": [
                {
                    "split": s.split,
                    "index": s.index,
                    "planned_bytes": s.planned_bytes,
                    "pieces": [[*_piece_fields(p)] for p in s.pieces],
                }
                for s in self.shards
            ],
            "dropped": self.dropped,
        }

    @property
    def hash(self) -> str:
        """sha256 of :meth:`to_dict` as canonical JSON (16 hex digits).

        Computed once and kept (seconds at 100,000 shards; every pack unit asks for it);
        assigning any field forgets it."""
        got = self.__dict__.get("_hash")
        if got is None:
            blob = json.dumps(self.to_dict(), sort_keys=True).encode()
            got = self.__dict__["_hash"] = hashlib.sha256(blob).hexdigest()[:16]
        return got

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_hash", None)
        super().__setattr__(name, value)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PackPlan:
        from ..splits import SplitConfig
        from .config import QCConfig

        if d.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a pack plan (format {d.get('format')!r})")
        cfg = dict(d["config"])
        cfg.pop("schema", None)
        cfg["qc"] = QCConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["qc"].items()}
        )
        sc = {k: _tuplify(v) for k, v in d["split_config"].items()}
        return cls(
            config=PackConfig(**cfg),
            split_config=SplitConfig(**sc),
            recordings=[RecordingInfo(**r) for r in d["recordings"]],
            shards=[
                ShardSpec(
                    split=s["split"],
                    index=s["index"],
                    planned_bytes=s["planned_bytes"],
                    pieces=tuple(Piece(*p) for p in s["pieces"]),
                )
                for s in d["shards"]
            ],
            dropped=list(d["dropped"]),
        )


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def ledger_stores(root: str, storage_options: dict | None = None) -> list[str] | None:
    """The stores of the ingest ledger's ``ok`` rows under ``root`` (see
    :func:`brainomni.ingest.ledger.ok_stores`); None when ``root`` holds no ingest ledger."""
    from ..ingest.ledger import ok_stores

    return ok_stores(root, storage_options)


def discover_stores(root: str, storage_options: dict | None = None) -> list[str]:
    """Committed recording stores at or under ``root`` (those with a ``_COMPLETE`` marker),
    sorted. ``root`` may itself be one store. Incomplete stores are skipped (no marker)."""
    fs, path = get_fs(root, storage_options)
    if fs.exists(f"{path}/_COMPLETE") and fs.exists(f"{path}/zarr.json"):
        return [to_url(fs, path)]
    found = fs.glob(f"{path}/**/_COMPLETE") if not is_local(fs) else None
    if found is None:
        import glob

        found = glob.glob(f"{path}/**/_COMPLETE", recursive=True)
    stores = sorted(
        to_url(fs, p.rsplit("/", 1)[0])
        for p in found
        if p.rsplit("/", 1)[0].endswith(".zarr") and "/.tmp" not in p
    )
    log.info("found %d committed stores under %s", len(stores), redact(root))
    return stores


def read_recording_info(uri: str, storage_options: dict | None = None) -> RecordingInfo:
    """Read one store's attributes (raises ``FileNotFoundError`` when it is incomplete)."""
    from ..stores.recording import open_recording

    g = open_recording(uri, storage_options)
    a = dict(g.attrs)
    p = a.get("provenance", {})
    types = np.asarray(g["sensor_type"][:])
    return RecordingInfo(
        uri=uri,
        recording_id=str(p.get("recording_id") or ""),
        dataset=str(p.get("dataset") or ""),
        dataset_version=str(p.get("dataset_version") or ""),
        subject=str(p.get("subject") or ""),
        session=str(p.get("session") or ""),
        task=str(p.get("task") or ""),
        run=str(p.get("run") or ""),
        modality=str(p.get("modality") or ""),
        source_checksum=p.get("source_checksum"),
        config_hash=str(a.get("config_hash") or ""),
        n_times=int(a["n_times"]),
        sfreq=float(a["sfreq"]),
        n_eeg=int(np.sum(types == EEG)),
        n_mag=int(np.sum(types == MAG)),
        n_grad=int(np.sum(types == GRAD)),
    )


def _pad(n: int) -> int:
    return 512 + (n + 511) // 512 * 512


def planned_sample_bytes(n_channels: int, config: PackConfig) -> int:
    """Upper bound of one sample's bytes in a tar (headers, padding, npy headers, JSON)."""
    item = 2 if config.dtype == "float16" else 4
    return (
        _pad(128 + n_channels * config.window * item)
        + _pad(128 + n_channels * 24)
        + _pad(128 + n_channels)
        + _pad(_JSON_BUDGET)
    )


def make_plan(
    stores: list[str],
    config: PackConfig,
    split_config: SplitConfig,
    *,
    storage_options: dict | None = None,
    threads: int = 8,
) -> PackPlan:
    """Read every store's attributes and cut the windows into shards (see module doc)."""

    def info(uri: str) -> RecordingInfo | None:
        try:
            return read_recording_info(uri, storage_options)
        except FileNotFoundError:  # listed (e.g. by the ingest ledger) but gone or incomplete
            return None

    with ThreadPoolExecutor(max(1, threads)) as ex:
        infos = list(ex.map(info, stores))
    plan = plan_from_infos([i for i in infos if i is not None], config, split_config)
    missing = [u for u, i in zip(stores, infos, strict=True) if i is None]
    if missing:
        log.warning("%d listed stores are missing or incomplete: dropped", len(missing))
        gone = [
            {"uri": u, "recording_id": "", "dataset": "", "reason": "store_missing"}
            for u in missing
        ]
        plan.dropped = gone + plan.dropped
    return plan


def plan_from_infos(
    infos: list[RecordingInfo], config: PackConfig, split_config: SplitConfig
) -> PackPlan:
    """The plan of recordings whose store attributes are ``infos`` (see :func:`make_plan`)."""
    kept: list[RecordingInfo] = []
    dropped: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for info in infos:
        reason = None
        if not info.recording_id:
            reason = "no_recording_id"
        elif info.recording_id in seen:
            reason = "duplicate_recording_id"
        elif abs(info.sfreq - config.sfreq) > 1e-9:
            reason = "sfreq_mismatch"
        elif info.n_times < config.window:
            reason = "shorter_than_window"
        split = None
        if reason is None:
            split = assign_split(info.dataset, info.subject or info.recording_id, split_config)
            if split is None:
                reason = "excluded_downstream"
        if reason is not None:
            dropped.append(
                {
                    "uri": info.uri,
                    "recording_id": info.recording_id,
                    "dataset": info.dataset,
                    "reason": reason,
                }
            )
            continue
        seen[info.recording_id] = info.uri
        kept.append(_with_split(info, split))
    kept.sort(key=lambda r: (r.split, r.recording_id))
    shards = _cut(kept, config)
    plan = PackPlan(config, split_config, kept, shards, dropped)
    log.info(
        "plan: %d recordings, %d shards, dropped %s",
        len(kept),
        len(shards),
        dict(Counter(d["reason"] for d in dropped)),
    )
    return plan


def _with_split(info: RecordingInfo, split: str) -> RecordingInfo:
    # the constructor with every field (dataclasses.replace re-reads the fields by name:
    # a quarter of planning 200,000 recordings)
    return RecordingInfo(*_info_fields(info)[:-1], split)


_INFO_FIELDS = tuple(f.name for f in fields(RecordingInfo))


_info_fields = operator.attrgetter(*_INFO_FIELDS)
if _INFO_FIELDS[-1] != "split":  # _with_split passes the fields in order, split last
    raise ImportError("RecordingInfo.split must stay its last field (see _with_split)")
_piece_fields = operator.attrgetter("rec", "first", "count")


def _info_dict(info: RecordingInfo) -> dict[str, Any]:
    """``asdict(info)``: its fields are scalars, so no deep copy is needed (``asdict``'s
    per-value ``deepcopy`` was most of hashing a plan of 200,000 recordings); one C call
    gets them all."""
    return dict(zip(_INFO_FIELDS, _info_fields(info), strict=True))


def _cut(recs: list[RecordingInfo], config: PackConfig) -> list[ShardSpec]:
    shards: list[ShardSpec] = []
    target = config.target_shard_bytes
    split, index, pieces, size = None, 0, [], 0

    def close() -> None:
        nonlocal index, pieces, size
        if pieces:
            shards.append(ShardSpec(split, index, tuple(pieces), size))
            index, pieces, size = index + 1, [], 0

    for i, r in enumerate(recs):
        if r.split != split:
            close()
            split, index = r.split, 0
        n_win = len(window_starts(r.n_times, config.window, config.stride))
        per = planned_sample_bytes(r.n_channels, config)
        first = 0
        while first < n_win:
            room = max(0, target - size) // per
            if room == 0:
                if pieces:
                    close()
                    continue
                room = 1  # one sample larger than the target: a shard of its own
            take = min(room, n_win - first)
            pieces.append(Piece(i, first, take))
            size += take * per
            first += take
    close()
    return shards
