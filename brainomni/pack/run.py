"""Run a pack: freeze the plan, write the shards (a stage of the stage core), write the
index last.

The input is the ingest ledger's ``ok`` rows when ``store_root`` is an ingest destination
(a frozen list: nothing is globbed), else the committed stores found under ``store_root``
(a store tree not written by ingest, or one store), or an explicit list of stores.
:class:`PackStage`'s units are the plan's shards; one unit is
:func:`brainomni.pack.shards.write_shard` (its completion marker: the shard's ``.json``
index with this plan's hash), so the result does not depend on the executor (``local``,
``ray``, any ``map_fn``), the number of workers or the order in which units finish.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import __version__
from ..io.commit import atomic_write_bytes
from ..io.fs import join_url, read_json
from ..io.redact import redact
from ..pipeline import ALREADY_DONE, MapExecutor, Stage, StageRow, run_stage
from ..pipeline.run import raise_if_failed
from ..splits import SplitConfig
from .config import PackConfig
from .plan import PackPlan, discover_stores, ledger_stores, make_plan
from .shards import TMP_PREFIX, clean_temp_shards, shard_urls, temp_shard_dir, write_shard

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
PACK_FORMAT = "brainomni.pack-index/1"


class PlanMismatch(RuntimeError):
    """The destination holds a pack from a different plan (stores, config or splits)."""


def prepare_pack(
    store_root: str | list[str],
    dest: str,
    config: PackConfig,
    split_config: SplitConfig,
    *,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
) -> PackPlan:
    """Plan the pack and freeze it as ``DEST/plan.json``.

    Refuses (:class:`PlanMismatch`) when ``DEST`` already holds a different plan: a resumed
    pack must see the same stores, config and split config.
    """
    if isinstance(store_root, list):
        stores = sorted(store_root)
    else:
        stores = ledger_stores(store_root, storage_options)
        if stores is None:
            log.info(
                "no ingest ledger under %s: packing the committed stores found there",
                redact(store_root),
            )
            stores = discover_stores(store_root, storage_options)
    if not stores:
        raise ValueError(f"no committed recording stores found at {store_root!r}")
    plan = make_plan(stores, config, split_config, storage_options=storage_options)
    url = join_url(dest, "plan.json")
    old = read_json(url, dest_storage_options)
    if old is not None:
        old_hash = PackPlan.from_dict(old).hash
        if old_hash != plan.hash:
            raise PlanMismatch(
                f"{dest} holds a pack from another plan ({old_hash} != {plan.hash}): the "
                "stores, pack config or split config changed; pack into a new destination"
            )
    else:
        atomic_write_bytes(
            url, json.dumps(plan.to_dict(), sort_keys=True).encode(), dest_storage_options
        )
    return plan


def finalize_pack(
    plan: PackPlan,
    indices: Iterable[dict[str, Any]],
    dest: str,
    *,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
) -> dict[str, Any]:
    """Write ``DEST/index.json`` (the pack's completion marker) and return it."""
    from ..stores.recording import open_recording

    indices = sorted(indices, key=lambda i: (i["split"], i["index"]))
    if len(indices) != len(plan.shards):
        raise RuntimeError(f"{len(indices)} shard indices for {len(plan.shards)} planned shards")
    cleaning: dict[str, Any] = {}
    for r in plan.recordings:
        if r.config_hash not in cleaning:
            cleaning[r.config_hash] = dict(open_recording(r.uri, storage_options).attrs).get(
                "config", {}
            )
    rejected: Counter[str] = Counter()
    for i in indices:
        rejected.update(i["rejected"])
    index = {
        "format": PACK_FORMAT,
        "plan_hash": plan.hash,
        "code_version": __version__,
        "pack_config": plan.config.to_dict(),
        "pack_config_hash": plan.config.hash,
        "split_config": plan.split_config.to_dict(),
        "split_config_hash": plan.split_config.hash,
        "cleaning_configs": cleaning,
        "recordings": [index_recording(r) for r in plan.recordings],
        "dropped_recordings": plan.dropped,
        "rejected_windows": dict(sorted(rejected.items())),
        "shards": [i for i in indices if i["samples"]],
        "empty_shards": [
            f"{i['split']}/shard-{i['index']:06d}" for i in indices if not i["samples"]
        ],
    }
    atomic_write_bytes(
        join_url(dest, INDEX_NAME), json.dumps(index, sort_keys=True).encode(), dest_storage_options
    )
    return index


def index_recording(r: Any) -> dict[str, Any]:
    """A planned recording's entry in ``index.json`` (what manifests read)."""
    return {
        "recording_id": r.recording_id,
        "dataset": r.dataset,
        "dataset_version": r.dataset_version,
        "subject": r.subject,
        "session": r.session,
        "split": r.split,
        "kind": r.kind,
        "n_channels": r.n_channels,
        "source_checksum": r.source_checksum,
        "cleaning_config_hash": r.config_hash,
        "store": r.uri,
    }


@dataclass
class PackStage(Stage):
    """Write each shard of a frozen pack plan (see the module doc)."""

    name: ClassVar[str] = "pack"
    expected_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, ValueError)
    fixes: ClassVar[Mapping[str, str]] = {
        "FileNotFoundError": "a planned store is gone: restore it or pack into a new DEST",
        "OSError": "a store or the destination could not be read/written: check and rerun",
        "ValueError": "a store's arrays do not match its attributes: re-ingest it",
    }

    plan: PackPlan | None = None
    dest: str = ""
    storage_options: dict | None = None
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = True

    def units(self) -> Sequence[int]:
        return range(len(self.plan.shards))

    def key(self, unit: int) -> str:
        return self.plan.shards[unit].name

    def reuse(self, unit: int, prev: Any) -> bool:
        return False  # the shard's own marker is checked by run_unit (cheap; gives its index)

    def run_unit(self, unit: int, *, attempt: int, worker: str) -> StageRow:
        dso = dict(self.dest_storage_options)
        reason = ""
        old = (
            read_json(shard_urls(self.dest, self.plan.shards[unit])[1], dso)
            if self.resume
            else None
        )
        if isinstance(old, dict) and old.get("plan_hash") == self.plan.hash:
            index, reason = old, ALREADY_DONE
        else:
            index = write_shard(
                self.plan,
                unit,
                self.dest,
                plan_hash=self.plan.hash,
                storage_options=self.storage_options,
                dest_storage_options=dso,
                resume=False,
            )
        return StageRow(
            key=self.key(unit),
            outcome="ok",
            reason=reason,
            output=index.get("path") or "",
            items=int(index.get("samples") or 0),
            bytes_out=int(index.get("bytes") or 0),
            detail=json.dumps(index, sort_keys=True),
            worker=worker,
        )

    def clean_partial(self, unit: int) -> None:
        spec = self.plan.shards[unit]
        folder = temp_shard_dir(self.dest, spec.split, dict(self.dest_storage_options))
        pattern = os.path.join(glob.escape(folder), f"{TMP_PREFIX}{spec.index:06d}-*.tar")
        for p in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def before_run(self) -> dict[str, Any]:
        splits = [s.split for s in self.plan.shards]
        removed = clean_temp_shards(self.dest, splits, dict(self.dest_storage_options))
        if removed:
            log.info("removed %d temporary shard(s) left by an interrupted pack", len(removed))
        return {"temp_shards_removed": len(removed), "plan_hash": self.plan.hash}


def pack(
    store_root: str | list[str],
    dest: str,
    config: PackConfig,
    split_config: SplitConfig | None = None,
    *,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
    map_fn: Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]] | None = None,
    resume: bool = True,
    executor: Any = None,
    progress_every_s: float = 10.0,
) -> dict[str, Any]:
    """Plan, write every shard (a :class:`PackStage` run by ``executor``: ``local``,
    ``ray`` or an executor object; or by any ``map_fn``), finalize; the pack index.

    Shards that fail are ledger rows (``DEST/ledger.parquet``) and the pack stops with
    :class:`~brainomni.pipeline.StageFailed` before ``index.json``; a rerun redoes them."""
    split_config = split_config or SplitConfig()
    plan = prepare_pack(
        store_root,
        dest,
        config,
        split_config,
        storage_options=storage_options,
        dest_storage_options=dest_storage_options,
    )
    stage = PackStage(
        plan=plan,
        dest=dest,
        storage_options=storage_options,
        dest_storage_options=dict(dest_storage_options or {}),
        resume=resume,
    )
    if executor is None and map_fn is not None and map_fn is not map:
        executor = MapExecutor(map_fn)
    result = run_stage(stage, executor, progress_every_s=progress_every_s)
    raise_if_failed(stage, result, "index.json")
    indices = [json.loads(r.detail) for r in result.received]
    return finalize_pack(
        plan,
        indices,
        dest,
        storage_options=storage_options,
        dest_storage_options=dest_storage_options,
    )


def summary_table(index: dict[str, Any]) -> str:
    """Counts for the end of a job: samples per split, rejected windows, dropped recordings."""
    per_split: Counter[str] = Counter()
    for s in index["shards"]:
        per_split[s["split"]] += s["samples"]
    lines = ["split            shards  samples"]
    for sp in sorted(per_split):
        n = sum(1 for s in index["shards"] if s["split"] == sp)
        lines.append(f"{sp:<16} {n:>6}  {per_split[sp]:>7}")
    lines.append("rejected windows: " + (json.dumps(index["rejected_windows"]) or "{}"))
    dropped = Counter(d["reason"] for d in index["dropped_recordings"])
    lines.append("dropped recordings: " + json.dumps(dict(sorted(dropped.items()))))
    return "\n".join(lines)
