"""One stream: read its share of each epoch chunk by chunk, shuffle, bucket, batch.

A chunk (``plan.chunk`` positions of the stream's share) is read in stream order, permuted
by its seeded generator and cut into batches: samples with equal channel counts go together
(full batches of ``micro_batch``); what is left over (fewer than ``micro_batch`` of some
count) is sorted by channel count and padded, with a mask, into the last batches of the
chunk. Batch order within the chunk is permuted too. Every batch carries the stream's cursor
*after* it, so the consumer knows exactly what has been delivered. A finite stream
(``max_epochs``) ends with one ``{"stats_only": True, ...}`` record carrying its final cursor
and counters (skips after the last batch included); it holds no samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import Plan, StreamCursor, runs_ids, runs_len, runs_slice
from .reader import ReadConfig, ShardFailed, ShardSource, read_shard

log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Counters of one stream (cumulative since the loader was built)."""

    samples: int = 0
    batches: int = 0
    real_elements: int = 0  # channel x sample cells of real data in batches
    padded_elements: int = 0  # cells added by padding
    shards_read: int = 0
    shard_retries: int = 0
    shards_skipped: int = 0
    samples_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_batches(n_channels: list[int], micro_batch: int, bucket: bool) -> list[list[int]]:
    """Group positions (already in shuffled order) into batches.

    With ``bucket``, full batches of equal channel count first (in order of first
    appearance), then the leftovers sorted by channel count (stable) in padded batches.
    Without it, consecutive groups of ``micro_batch``.
    """
    order = list(range(len(n_channels)))
    if not bucket:
        return [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(n_channels[i], []).append(i)
    full, rest = [], []
    for g in groups.values():
        k = len(g) // micro_batch * micro_batch
        full += [g[i : i + micro_batch] for i in range(0, k, micro_batch)]
        rest += g[k:]
    rest.sort(key=lambda i: n_channels[i])
    return full + [rest[i : i + micro_batch] for i in range(0, len(rest), micro_batch)]


class Stream:
    """The batches of stream ``stream`` of ``plan``, from ``cursor`` on (infinite unless
    ``max_epochs``). ``collate(samples) -> batch dict``."""

    def __init__(
        self,
        plan: Plan,
        stream: int,
        sources: list[ShardSource],
        *,
        micro_batch: int,
        bucket: bool,
        decode: Callable[[str, dict], dict[str, Any]],
        collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
        read_config: ReadConfig,
        storage_options: dict | None = None,
        cursor: StreamCursor | None = None,
        max_epochs: int | None = None,
    ) -> None:
        self.plan, self.stream, self.sources = plan, stream, sources
        self.micro_batch, self.bucket = micro_batch, bucket
        self.decode, self.collate = decode, collate
        self.read_config, self.storage_options = read_config, storage_options
        self.cursor = cursor or StreamCursor()
        self.max_epochs = max_epochs
        self.stats = StreamStats()
        self._cache: tuple[int, dict[int, dict[str, Any]]] | None = None  # (shard, samples)

    # ------------------------------------------------------------------ reading
    def _shard(self, k: int, need: set[int]) -> dict[int, dict[str, Any]]:
        if self._cache is not None and self._cache[0] == k:
            return self._cache[1]
        st: dict[str, Any] = {}
        try:
            got = read_shard(
                self.sources[k], None, self.decode, self.read_config, self.storage_options, st
            )
        except ShardFailed as exc:
            log.error("skipping shard %d after retries: %s", k, exc)
            self.stats.shards_skipped += 1
            self.stats.skipped.append(str(exc))
            got = {}
        self.stats.shards_read += st.get("shards_read", 0)
        self.stats.shard_retries += st.get("shard_retries", 0)
        self._cache = (k, got)
        return got

    def _read_chunk(self, ids: np.ndarray) -> list[dict[str, Any] | None]:
        """Samples for flat ids in order (``None`` where a shard was skipped)."""
        table = self.plan.table
        out: list[dict[str, Any] | None] = []
        for fid in ids:
            k, i = table.locate(int(fid))
            s = self._shard(k, set()).get(i)
            if s is None:
                self.stats.samples_skipped += 1
            out.append(s)
        return out

    # ------------------------------------------------------------------ batching
    def __iter__(self) -> Iterator[dict[str, Any]]:
        plan, cur = self.plan, self.cursor
        while self.max_epochs is None or cur.epoch < self.max_epochs:
            runs = plan.stream_runs(cur.epoch, self.stream)
            n = runs_len(runs)
            n_chunks = -(-n // plan.chunk)
            while cur.chunk < n_chunks:
                lo = cur.chunk * plan.chunk
                ids = runs_ids(runs_slice(runs, lo, min(n, lo + plan.chunk)))
                samples = self._read_chunk(ids)
                perm = plan.chunk_permutation(cur.epoch, self.stream, cur.chunk, len(ids))
                perm = [int(p) for p in perm if samples[p] is not None]
                chans = [samples[p]["n"] for p in perm]
                groups = [
                    [perm[j] for j in b] for b in plan_batches(chans, self.micro_batch, self.bucket)
                ]
                order = plan.batch_order(cur.epoch, self.stream, cur.chunk, len(groups))
                done = set(cur.done)
                for b in order:
                    pos = groups[b]
                    if done.issuperset(pos):
                        continue  # delivered before the resume
                    batch = self.collate([samples[p] for p in pos])
                    done.update(pos)
                    cur.done = sorted(done)
                    self._account(batch)
                    batch["ids"] = [int(ids[p]) for p in pos]
                    batch["epoch"] = cur.epoch
                    batch["stream"] = self.stream
                    last = len(done) >= sum(1 for s in samples if s is not None)
                    after = (
                        StreamCursor(cur.epoch, cur.chunk + 1, [])
                        if last
                        else StreamCursor(cur.epoch, cur.chunk, list(cur.done))
                    )
                    batch["cursor"] = after.to_dict()
                    batch["stats"] = self.stats.to_dict()
                    yield batch
                cur.chunk, cur.done = cur.chunk + 1, []
            cur.epoch, cur.chunk, cur.done = cur.epoch + 1, 0, []
            self._cache = None
        # A finite pass ends with a stats-only record: shards skipped after the last batch
        # (a bad final shard) would otherwise never reach the consumer's counters.
        yield {
            "stats_only": True,
            "stream": self.stream,
            "cursor": cur.to_dict(),
            "stats": self.stats.to_dict(),
        }

    def _account(self, batch: dict[str, Any]) -> None:
        self.stats.batches += 1
        self.stats.samples += batch["size"]
        self.stats.real_elements += batch.get("real_elements", 0)
        self.stats.padded_elements += batch.get("padded_elements", 0)
