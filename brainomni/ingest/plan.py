"""Plan an ingest: crawl once into a frozen work list, compare with the one already frozen
under ``DEST/crawl/``, and list the recordings still to do.

Files under ``DEST/crawl/``: ``recordings.parquet`` and ``skipped.parquet`` (the crawl,
see :mod:`brainomni.sources.table`) and ``plan.json`` (sources, config hash and a fingerprint
of the recordings: ids and checksums), written last. A rerun with the same sources, the
same files and the same config resumes; anything else is refused unless ``recrawl`` is set,
in which case the new list replaces the frozen one (changed recordings are then redone:
their store markers no longer match).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainomni.io.commit import atomic_write_bytes
from brainomni.io.fs import join_url, read_json
from brainomni.io.redact import redact
from brainomni.io.retry import RetryPolicy
from brainomni.records import RecordingRef
from brainomni.signal.config import CleanConfig
from brainomni.sources import CrawlResult, Source, crawl, read_table, refs_from_table, write_crawl

from .ledger import LedgerRow, read_ledger
from .task import IngestTask

logger = logging.getLogger(__name__)

CRAWL_DIR = "crawl"
PLAN_FILE = "plan.json"
PLAN_FORMAT = "brainomni.ingest-plan/1"
FINAL_OUTCOMES = ("ok", "skipped")  # a failed recording is tried again by the next run


class PlanChanged(RuntimeError):
    """The frozen work list under DEST differs from this run's; resume refused."""


@dataclass
class Plan:
    """The frozen work list and what is left of it."""

    recordings: list[RecordingRef]
    skipped: list[tuple[RecordingRef, str]]  # left out by the crawl, with reasons
    tasks: list[IngestTask]  # still to run
    done: list[LedgerRow]  # final rows from earlier runs (not run again)
    fingerprint: str
    resumed: bool = False
    crawl_summary: dict[str, Any] = field(default_factory=dict)


def fingerprint(refs: Sequence[RecordingRef], ids: Sequence[str] | None = None) -> str:
    """sha256 over sorted (recording id, checksum): changes when any recording does.

    ``ids`` are the refs' recording ids when the caller has them (each is a sha256)."""
    ids = [r.recording_id for r in refs] if ids is None else ids
    h = hashlib.sha256()
    for rid, checksum in sorted(zip(ids, (r.checksum or "" for r in refs), strict=True)):
        h.update(f"{rid}\x1f{checksum}\n".encode())
    return h.hexdigest()


def _plan_doc(
    sources: Sequence[Source],
    refs: Sequence[RecordingRef],
    config: CleanConfig,
    ids: Sequence[str] | None = None,
):
    return {
        "format": PLAN_FORMAT,
        "sources": [redact(s.describe()) for s in sources],
        "config_hash": config.hash,
        "config": config.to_dict(),
        "n_recordings": len(refs),
        "fingerprint": fingerprint(refs, ids),
    }


def _diff(old: dict[str, Any], new: dict[str, Any], old_refs: list[RecordingRef], refs) -> str:
    msgs = []
    if old.get("sources") != new["sources"]:
        msgs.append(f"sources {old.get('sources')} -> {new['sources']}")
    if old.get("config_hash") != new["config_hash"]:
        msgs.append(f"config hash {old.get('config_hash')} -> {new['config_hash']}")
    if old.get("fingerprint") != new["fingerprint"]:
        before = {r.recording_id: r.checksum for r in old_refs}
        after = {r.recording_id: r.checksum for r in refs}
        added = len(after.keys() - before.keys())
        removed = len(before.keys() - after.keys())
        changed = sum(1 for k in after.keys() & before.keys() if after[k] != before[k])
        msgs.append(f"recordings: {added} added, {removed} removed, {changed} changed")
    return "; ".join(msgs)


def _pool_start() -> None:
    # the forked child shares the driver's heap: freezing it keeps the child's collector
    # from walking (and so copying) every inherited object on each full collection
    import gc

    gc.freeze()


def crawl_all(sources: Sequence[Source], crawl_fn: Any = crawl) -> list[CrawlResult]:
    """Crawl every source, several at once: datasets are independent, and a crawl is a
    listing plus one or two small reads per recording (sidecars) — network-bound on object
    stores, CPU-bound (parsing) on local or cached listings.

    With the default crawler and more than one source, sources are crawled by a pool of
    processes (``BRAINOMNI_CRAWL_PROCS``, default the CPU count; forked, so registered
    filesystems carry over), results in the sources' order. A crawler passed in by the
    caller, one source, one process, or a pool that cannot start: in this process, one
    source after another. Errors of a source's crawl propagate either way.

    The recordings table is built by the driver, not in the pool: a source's table carries
    its ``channel_types`` expanded per recording, while its refs share one tuple per
    distinct ``channels.tsv`` (pickled once); shipping tables cost more than it saved
    (measured side by side at 40,000 recordings)."""
    import os

    procs = int(os.environ.get("BRAINOMNI_CRAWL_PROCS") or os.cpu_count() or 1)
    procs = min(procs, len(sources))
    if crawl_fn is not crawl or procs < 2:
        return [crawl_fn(s) for s in sources]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        ctx = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(procs, mp_context=ctx, initializer=_pool_start)
    except (ValueError, OSError) as exc:  # no fork on this platform, no processes left
        logger.info("crawling serially (%s)", exc)
        return [crawl_fn(s) for s in sources]
    with pool:
        return list(pool.map(crawl_fn, sources, chunksize=1))


def freeze(
    sources: Sequence[Source],
    dest: str,
    *,
    config: CleanConfig,
    dest_storage_options: Mapping[str, Any] | None = None,
    recrawl: bool = False,
    limit: int | None = None,
    crawl_fn: Any = crawl,
) -> tuple[
    list[RecordingRef], list[str], list[tuple[RecordingRef, str]], dict[str, Any], dict, bool
]:
    """Crawl and freeze the list under ``DEST/crawl/``; (refs, their ids, skipped, plan,
    options, resumed).

    ``options`` maps each recording id to its source's storage options.

    ``limit`` keeps the first N recordings (in the crawl's stable order) — part of the frozen
    list, so a rerun must pass the same limit. Raises :class:`PlanChanged` when an earlier
    frozen list differs and ``recrawl`` is not set.
    """
    so = dict(dest_storage_options or {})
    options: dict[str, dict] = {}
    refs: list[RecordingRef] = []
    crawl_skipped: list[tuple[RecordingRef, str]] = []
    so_of: dict[int, dict] = {}  # id(ref) -> its source's storage options
    # accumulated in place: ``a + b`` per source would be quadratic
    for source, found in zip(sources, crawl_all(sources, crawl_fn), strict=True):
        so_src = dict(source.storage_options)
        for ref in found.recordings:  # refs carry no storage options: keep the source's
            so_of.setdefault(id(ref), so_src)
        refs.extend(found.recordings)
        crawl_skipped.extend(found.skipped)
    result = CrawlResult(refs, crawl_skipped)  # sorts refs in place
    # each id once (a sha256 each; 200,000 recordings): options, fingerprint, the frozen
    # table and the tasks reuse them
    all_ids = [r.recording_id for r in refs]
    for rid, ref in zip(all_ids, refs, strict=True):
        options.setdefault(rid, so_of[id(ref)])
    del so_of
    if limit is not None:
        refs = refs[:limit]
    ids = all_ids[: len(refs)]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate recording ids across sources (same dataset listed twice?)")
    crawl_dir = join_url(dest, CRAWL_DIR)
    doc = _plan_doc(sources, refs, config, ids)
    old = read_json(join_url(crawl_dir, PLAN_FILE), so)
    resumed = old is not None
    if old is not None and any(
        old.get(k) != doc[k] for k in ("sources", "config_hash", "fingerprint")
    ):
        old_refs = refs_from_table(read_table(join_url(crawl_dir, "recordings.parquet"), so))
        what = _diff(old, doc, old_refs, refs)
        if not recrawl:
            raise PlanChanged(
                f"{redact(dest)} holds a different frozen work list ({what}); pass --recrawl "
                "to replace it (changed recordings are redone), or use another --dest"
            )
        logger.warning("replacing the frozen work list under %s: %s", redact(dest), what)
        resumed = False
    if old is None or not resumed:
        # recordings + skipped first, plan.json last: the plan exists only once complete.
        write_crawl(CrawlResult(refs, list(result.skipped)), crawl_dir, so, ids=ids)
        body = json.dumps(doc, indent=1, sort_keys=True).encode()
        atomic_write_bytes(join_url(crawl_dir, PLAN_FILE), body, so)
    return refs, ids, list(result.skipped), doc, options, resumed


def plan(
    sources: Sequence[Source],
    dest: str,
    *,
    config: CleanConfig,
    dest_storage_options: Mapping[str, Any] | None = None,
    recrawl: bool = False,
    limit: int | None = None,
    cache_root: str | None = None,
    crawl_fn: Any = crawl,
) -> Plan:
    """Freeze the work list and split it into tasks to run and rows already final."""
    so = dict(dest_storage_options or {})
    refs, ids, skipped, doc, options, resumed = freeze(
        sources,
        dest,
        config=config,
        dest_storage_options=so,
        recrawl=recrawl,
        limit=limit,
        crawl_fn=crawl_fn,
    )
    previous = {r.recording_id: r for r in read_ledger(dest, so)}
    policy = RetryPolicy()  # immutable: one for every task (its default reads the env)
    tasks, done = [], []
    for rid, ref in zip(ids, refs, strict=True):
        prev = previous.get(rid) if previous else None
        if (
            prev is not None
            and prev.outcome in FINAL_OUTCOMES
            and prev.source_checksum == (ref.checksum or "")
            and prev.config_hash == config.hash
        ):
            done.append(prev)
            continue
        tasks.append(
            IngestTask(
                ref=ref,
                dest=dest,
                attempt=(prev.attempt + 1) if prev is not None else 1,
                config=config,
                storage_options=options.get(rid, {}),
                dest_storage_options=so,
                cache_root=cache_root,
                retry_policy=policy,
            )
        )
    summary = {"recordings": len(refs), "skipped_by_crawl": len(skipped)}
    logger.info(
        "plan: %d recordings (%d to run, %d already done), %d left out by the crawl%s",
        len(refs),
        len(tasks),
        len(done),
        len(skipped),
        " (resumed)" if resumed else "",
    )
    return Plan(refs, skipped, tasks, done, doc["fingerprint"], resumed, summary)
