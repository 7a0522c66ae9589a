"""Run a pack: freeze the plan, write the shards (any executor), write the index last.

Executor-agnostic: :func:`pack` takes a ``map_fn(fn, shard_numbers)`` (the built-in ``map``
by default); ``pipelines/pack.py`` passes one that runs the shards as Ray tasks. Each shard
task is :func:`brainomni.pack.shards.write_shard` with the plan, so the result does not
depend on the executor, the number of workers or the order in which tasks finish.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from .. import __version__
from ..splits import SplitConfig
from ..storage import atomic_write_bytes, join_url, read_json
from .config import PackConfig
from .plan import PackPlan, discover_stores, make_plan
from .shards import clean_temp_shards, write_shard

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
    stores = (
        sorted(store_root)
        if isinstance(store_root, list)
        else discover_stores(store_root, storage_options)
    )
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


def pack(
    store_root: str | list[str],
    dest: str,
    config: PackConfig,
    split_config: SplitConfig | None = None,
    *,
    storage_options: dict | None = None,
    dest_storage_options: dict | None = None,
    map_fn: Callable[[Callable[[int], dict], Iterable[int]], Iterable[dict]] = map,
    resume: bool = True,
) -> dict[str, Any]:
    """Plan, write every shard through ``map_fn``, finalize; the pack index."""
    split_config = split_config or SplitConfig()
    plan = prepare_pack(
        store_root,
        dest,
        config,
        split_config,
        storage_options=storage_options,
        dest_storage_options=dest_storage_options,
    )
    removed = clean_temp_shards(dest, [s.split for s in plan.shards], dest_storage_options)
    if removed:
        log.info("removed %d temporary shard(s) left by an interrupted pack", len(removed))
    task = partial(_task, plan, dest, plan.hash, storage_options, dest_storage_options, resume)
    indices = list(map_fn(task, range(len(plan.shards))))
    return finalize_pack(
        plan,
        indices,
        dest,
        storage_options=storage_options,
        dest_storage_options=dest_storage_options,
    )


def _task(plan, dest, plan_hash, storage_options, dest_storage_options, resume, shard):
    return write_shard(
        plan,
        shard,
        dest,
        plan_hash=plan_hash,
        storage_options=storage_options,
        dest_storage_options=dest_storage_options,
        resume=resume,
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
