"""The loader's deterministic sample order, as index arithmetic only (no data is read here).

Vocabulary:

* **flat id**: sample ``i`` of shard ``k`` (shards of one split, manifest order) has the flat
  id ``offset[k] + i``; ids are ``0 .. N-1``.
* **sequence**: an ordered list of flat ids, stored as runs ``[[a, b], ...]`` (ids ``a..b-1``).
  Epoch ``e`` of a fresh plan is every shard in an order permuted by ``(seed, e)``; after a
  resume with another layout, a partially seen epoch is replaced by its *residual* sequence
  (the samples nobody consumed, in the same order).
* **stream**: one reader, ``stream = rank * workers + worker``. A sequence of ``n`` ids goes to
  ``S`` streams as contiguous position ranges ``[n*s//S, n*(s+1)//S)``: nothing is duplicated
  or lost whatever ``n`` and ``S``, and sizes differ by at most one sample.
* **chunk**: a stream cuts its share of an epoch into chunks of ``chunk`` positions; a chunk
  is the bounded shuffle buffer (its samples are permuted by a seeded generator and grouped
  into batches). A stream's cursor is ``(epoch, chunk, done positions within the chunk)``.

Everything that decides an order is a pure function of integers, so any rank can recompute
what any other stream has consumed from its cursor alone; :func:`translate` uses that to
resume with another number of ranks or workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

Runs = list[list[int]]  # [[start, stop), ...] of flat ids


def rng(*key: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative integers (stable across numpy versions)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def runs_len(runs: Runs) -> int:
    return sum(b - a for a, b in runs)


def runs_ids(runs: Runs) -> np.ndarray:
    """Expand runs into an int64 array of flat ids (use on bounded pieces only)."""
    if not runs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs])


def runs_slice(runs: Runs, start: int, stop: int) -> Runs:
    """Positions ``[start, stop)`` of a run sequence, as runs."""
    out: Runs = []
    pos = 0
    for a, b in runs:
        n = b - a
        lo, hi = max(start, pos), min(stop, pos + n)
        if lo < hi:
            out.append([a + lo - pos, a + hi - pos])
        pos += n
        if pos >= stop:
            break
    return out


def ids_to_runs(ids: Iterable[int]) -> Runs:
    """Compress an ordered id list into runs of consecutive ids."""
    out: Runs = []
    for i in ids:
        i = int(i)
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


@dataclass(frozen=True)
class ShardTable:
    """The shards of one split: sample counts and the flat-id offset of each."""

    counts: tuple[int, ...]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def locate(self, flat_id: int) -> tuple[int, int]:
        """``(shard number, sample index in the shard)`` of a flat id."""
        k = int(np.searchsorted(self.offsets, flat_id, side="right") - 1)
        return k, int(flat_id - self.offsets[k])

    def epoch_runs(self, seed: int, epoch: int, *, shuffle: bool = True) -> Runs:
        """The fresh order of epoch ``epoch``: whole shards, permuted by ``(seed, epoch)``."""
        order = np.arange(len(self.counts))
        if shuffle:
            order = rng(seed, epoch, 0x5EED).permutation(len(self.counts))
        off = self.offsets
        return [[int(off[k]), int(off[k + 1])] for k in order if self.counts[k]]


@dataclass
class StreamCursor:
    """Where one stream is: the next chunk to finish and the positions already delivered."""

    epoch: int = 0
    chunk: int = 0
    done: list[int] = field(default_factory=list)  # positions within the chunk

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "chunk": self.chunk, "done": sorted(self.done)}

    @classmethod
    def from_dict(cls, d: dict) -> StreamCursor:
        return cls(int(d["epoch"]), int(d["chunk"]), [int(x) for x in d["done"]])


@dataclass
class Plan:
    """The order of every epoch for a layout of ``streams`` streams.

    ``overrides`` maps an epoch to its explicit residual sequence (after a layout change);
    other epochs are fresh. ``generation`` counts layout changes and enters every seed, so a
    residual is reshuffled rather than replayed.
    """

    table: ShardTable
    seed: int
    streams: int
    chunk: int
    shuffle: bool = True
    generation: int = 0
    overrides: dict[int, Runs] = field(default_factory=dict)

    def epoch_sequence(self, epoch: int) -> Runs:
        if epoch in self.overrides:
            return self.overrides[epoch]
        return self.table.epoch_runs(self.seed, epoch, shuffle=self.shuffle)

    def stream_runs(self, epoch: int, stream: int) -> Runs:
        """Stream ``stream``'s contiguous share of epoch ``epoch``."""
        seq = self.epoch_sequence(epoch)
        n, S = runs_len(seq), self.streams
        return runs_slice(seq, n * stream // S, n * (stream + 1) // S)

    def chunk_permutation(self, epoch: int, stream: int, chunk: int, n: int) -> np.ndarray:
        """Order in which a chunk's ``n`` samples (by position) enter batching."""
        if not self.shuffle:
            return np.arange(n)
        return rng(self.seed, epoch, self.generation, self.streams, stream, chunk).permutation(n)

    def batch_order(self, epoch: int, stream: int, chunk: int, n_batches: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(n_batches)
        key = (self.seed, epoch, self.generation, self.streams, stream, chunk, 0xBA7C)
        return rng(*key).permutation(n_batches)

    def consumed(self, epoch: int, stream: int, cursor: StreamCursor) -> np.ndarray:
        """Flat ids of epoch ``epoch`` that stream ``stream`` has delivered, given its cursor."""
        runs = self.stream_runs(epoch, stream)
        if cursor.epoch > epoch:
            return runs_ids(runs)
        if cursor.epoch < epoch:
            return np.zeros(0, dtype=np.int64)
        whole = runs_ids(runs_slice(runs, 0, cursor.chunk * self.chunk))
        part = runs_ids(
            runs_slice(runs, cursor.chunk * self.chunk, (cursor.chunk + 1) * self.chunk)
        )
        done = np.asarray(sorted(cursor.done), dtype=np.int64)
        if len(done) and done[-1] >= len(part):
            raise ValueError("loader state names positions beyond its chunk (corrupt state)")
        return np.concatenate([whole, part[done]]) if len(done) else whole

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "streams": self.streams,
            "chunk": self.chunk,
            "shuffle": self.shuffle,
            "generation": self.generation,
            "overrides": {str(k): v for k, v in sorted(self.overrides.items())},
        }


def translate(
    old: Plan, cursors: Sequence[StreamCursor], new_streams: int, new_chunk: int
) -> tuple[Plan, StreamCursor]:
    """Re-plan after a layout change: every sample not yet delivered by the old streams, once.

    Epochs that some old stream has started but not all have finished become residual
    overrides (the unconsumed ids in their original order); the new streams all start at the
    earliest such epoch. Returns the new plan and the common starting cursor.
    """
    if len(cursors) != old.streams:
        raise ValueError(
            f"loader state covers {len(cursors)} streams, the saved layout has {old.streams}: "
            "every rank's loader state is needed to resume with another layout"
        )
    e_min = min(c.epoch for c in cursors)
    e_max = max(c.epoch for c in cursors)
    overrides = {e: r for e, r in old.overrides.items() if e > e_max}
    for e in range(e_min, e_max + 1):
        seq = old.epoch_sequence(e)
        ids = runs_ids(seq)
        seen = np.concatenate(
            [old.consumed(e, s, c) for s, c in enumerate(cursors)] + [np.zeros(0, np.int64)]
        )
        if len(np.unique(seen)) != len(seen):
            raise ValueError(f"loader state is inconsistent: epoch {e} has duplicate deliveries")
        keep = ids[~np.isin(ids, seen)]
        overrides[e] = ids_to_runs(keep)
    new = Plan(
        table=old.table,
        seed=old.seed,
        streams=new_streams,
        chunk=new_chunk,
        shuffle=old.shuffle,
        generation=old.generation + 1,
        overrides=overrides,
    )
    return new, StreamCursor(epoch=e_min)
