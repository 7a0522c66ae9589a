"""The training loader: a manifest's shards -> per-rank batches, with exact, versioned state.

Usage (one per rank)::

    loader = ShardLoader(manifest, "train", rank=r, world=W, micro_batch=16, workers=4)
    loader.load_state_dict(all_ranks_states)   # optional: resume (any layout)
    for batch in loader: ...                   # infinite unless max_epochs
    loader.state_dict()                        # JSON-able, goes into every checkpoint

Streams are ``rank * workers + worker``; a ``DataLoader`` worker ``w`` serves local stream
``(w + next_local) % workers`` so that batches keep their strict round-robin order across a
resume. ``state_dict`` reflects exactly the batches this iterator has handed out (prefetched
ones do not count). Resuming with the same layout continues every stream where it stopped;
with another world size, worker count, chunk or micro-batch, :func:`~.plan.translate`
re-plans the unconsumed samples of the partially seen epochs over the new streams.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from ..formats.manifest import manifest_kind, read_manifest  # noqa: F401  (the loader's API)
from ..formats.sample import DECODERS
from ..io.fs import join_url
from .plan import Plan, ShardTable, StreamCursor, translate
from .reader import ReadConfig, ShardSource
from .stream import Stream

log = logging.getLogger(__name__)

STATE_FORMAT = "brainomni.loader-state"
STATE_VERSION = 1


class IncompatibleLoaderState(ValueError):
    """A saved loader state that cannot be resumed by this loader (version, data, seed)."""


def split_shards(
    m: dict[str, Any], split: str, shards_root: str | None = None
) -> list[ShardSource]:
    """The shards of one split, in manifest order, as readable sources."""
    root = shards_root or m["shards_root"]
    out = [
        ShardSource(
            join_url(root, s["path"]),
            s.get("sha256"),
            int(s["samples"]),
            int(s["bytes"]) if s.get("bytes") is not None else None,
        )
        for s in m["shards"]
        if s["split"] == split and s.get("path")
    ]
    if not out:
        splits = sorted({s["split"] for s in m["shards"]})
        raise ValueError(f"manifest has no shards in split {split!r} (splits: {splits})")
    return out


# --------------------------------------------------------------------------- collation


def collate_raw(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad to the batch's largest channel count: x (B, C, T) in the shards' dtype (float16 by
    default: cast on the device), pos (B, C, 6) float32, sensor_type (B, C) int64, mask
    (B, C) bool (True = real channel)."""
    B = len(samples)
    C = max(s["n"] for s in samples)
    T = samples[0]["signal"].shape[1]
    x = np.zeros((B, C, T), np.result_type(*[s["signal"].dtype for s in samples]))
    pos = np.zeros((B, C, 6), np.float32)
    st = np.zeros((B, C), np.int64)
    mask = np.zeros((B, C), bool)
    for b, s in enumerate(samples):
        c = s["n"]
        if s["signal"].shape[1] != T:
            raise ValueError(f"sample {s['key']}: {s['signal'].shape[1]} samples, batch has {T}")
        x[b, :c] = s["signal"]
        pos[b, :c] = s["sensors"]
        st[b, :c] = s["sensor_type"]
        mask[b, :c] = True
    real = int(mask.sum()) * T
    return {
        "x": torch.from_numpy(x),
        "pos": torch.from_numpy(pos),
        "sensor_type": torch.from_numpy(st),
        "mask": torch.from_numpy(mask),
        "padded": bool(not mask.all()),
        "keys": [s["key"] for s in samples],
        "size": B,
        "real_elements": real,
        "padded_elements": B * C * T - real,
    }


def collate_tokens(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack token samples: indices (B, S, W, Q) int64."""
    idx = np.stack([s["tokens"] for s in samples]).astype(np.int64)
    return {
        "indices": torch.from_numpy(idx),
        "keys": [s["key"] for s in samples],
        "size": len(samples),
        "real_elements": int(idx.size),
        "padded_elements": 0,
    }


COLLATE = {"raw": collate_raw, "tokens": collate_tokens}


# --------------------------------------------------------------------------- dataset


class RankStreams(tud.IterableDataset):
    """The streams of one rank; each DataLoader worker runs one of them."""

    def __init__(self, owner: ShardLoader) -> None:
        self.o = owner

    def __iter__(self):
        info = tud.get_worker_info()
        w = info.id if info is not None else 0
        o = self.o
        local = (w + o.next_local) % o.workers
        s = o.rank * o.workers + local
        stream = Stream(
            o.plan,
            s,
            o.sources,
            micro_batch=o.micro_batch,
            bucket=o.bucket,
            decode=DECODERS[o.kind],
            collate=COLLATE[o.kind],
            read_config=o.read_config,
            storage_options=o.storage_options,
            cursor=StreamCursor.from_dict(o.cursors[s].to_dict()),
            max_epochs=o.max_epochs,
        )
        yield from stream


class ShardLoader:
    """Batches of one rank from a manifest split; see the module docstring."""

    def __init__(
        self,
        manifest: str | dict,
        split: str = "train",
        *,
        rank: int = 0,
        world: int = 1,
        micro_batch: int = 16,
        workers: int = 0,
        seed: int = 42,
        chunk: int = 256,
        shuffle: bool = True,
        bucket: bool = True,
        prefetch: int = 2,
        max_epochs: int | None = None,
        shards_root: str | None = None,
        read_config: ReadConfig | None = None,
        storage_options: dict | None = None,
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world})")
        if micro_batch < 1 or chunk < micro_batch:
            raise ValueError(f"need 1 <= micro_batch ({micro_batch}) <= chunk ({chunk})")
        self.manifest = read_manifest(manifest, storage_options)
        self.kind = manifest_kind(self.manifest)
        self.split, self.rank, self.world = split, rank, world
        self.n_workers = workers
        self.workers = max(1, workers)
        self.micro_batch, self.bucket, self.prefetch = micro_batch, bucket, prefetch
        self.max_epochs = max_epochs
        self.read_config = read_config or ReadConfig()
        self.storage_options = storage_options
        self.sources = split_shards(self.manifest, split, shards_root)
        table = ShardTable(tuple(s.samples for s in self.sources))
        n_streams = world * self.workers
        if table.total < n_streams:
            raise ValueError(f"split {split!r} has {table.total} samples for {n_streams} streams")
        self.plan = Plan(table, seed, n_streams, chunk, shuffle)
        self.cursors: dict[int, StreamCursor] = {s: StreamCursor() for s in self._my_streams()}
        self.next_local = 0
        self.delivered = 0
        self.stream_stats: dict[int, dict[str, Any]] = {}

    def _my_streams(self) -> range:
        return range(self.rank * self.workers, (self.rank + 1) * self.workers)

    @property
    def samples_per_epoch(self) -> int:
        return self.plan.table.total

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds = RankStreams(self)
        kw: dict[str, Any] = {}
        if self.n_workers:
            kw = {
                "num_workers": self.n_workers,
                "prefetch_factor": self.prefetch,
                "persistent_workers": False,
                # fork is unsafe once threads run here (s3fs event loop): start clean then
                "multiprocessing_context": "spawn" if _has_threads() else None,
                "worker_init_fn": _worker_init,
            }
        # an explicit generator: building the iterator must not consume the global RNG
        dl = tud.DataLoader(ds, batch_size=None, generator=torch.Generator().manual_seed(0), **kw)
        it = iter(dl)
        try:
            for batch in it:
                s = int(batch["stream"])
                self.cursors[s] = StreamCursor.from_dict(batch.pop("cursor"))
                self.stream_stats[s] = batch.pop("stats")
                if batch.get("stats_only"):  # end of a finite stream: counters, no samples
                    continue
                self.next_local = (self.next_local + 1) % self.workers
                self.delivered += 1
                yield batch
        finally:  # stopped early (end of training, validation caps): stop the workers now
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                try:
                    shutdown()
                except RuntimeError as exc:
                    # a worker told to exit can die in C++ teardown ("terminate called without
                    # an active exception"); every batch it delivered was complete
                    log.warning("loader worker died while shutting down: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Counters summed over this rank's streams (samples, padding, shards skipped...)."""
        tot: dict[str, Any] = {}
        for st in self.stream_stats.values():
            for k, v in st.items():
                tot[k] = tot.get(k, [] if isinstance(v, list) else 0) + v
        return tot

    # ------------------------------------------------------------------ state
    def fingerprint(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "manifest": m.get("content_hash"),
            "split": self.split,
            "samples": self.plan.table.total,
            "seed": self.plan.seed,
            "shuffle": self.plan.shuffle,
        }

    def layout(self) -> dict[str, Any]:
        return {
            "world": self.world,
            "workers": self.workers,
            "streams": self.plan.streams,
            "chunk": self.plan.chunk,
            "micro_batch": self.micro_batch,
            "bucket": self.bucket,
        }

    def state_dict(self) -> dict[str, Any]:
        """This rank's state (JSON-able): version, data fingerprint, layout, plan, cursors."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "layout": self.layout(),
            "rank": self.rank,
            "plan": self.plan.to_dict(),
            "cursors": {str(s): c.to_dict() for s, c in self.cursors.items()},
            "next_local": self.next_local,
            "delivered": self.delivered,
        }

    def load_state_dict(self, states: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Resume from the states of *all* ranks of the saved run (one dict: a single rank).

        Same layout: every stream continues exactly. Another layout (world size, workers,
        chunk, micro-batch): the samples not yet delivered are re-planned over this layout.
        Raises :class:`IncompatibleLoaderState` for another version, manifest, split or seed.
        """
        states = [states] if isinstance(states, dict) else list(states)
        if not states:
            raise IncompatibleLoaderState("no loader state given")
        for st in states:
            if st.get("format") != STATE_FORMAT or st.get("version") != STATE_VERSION:
                raise IncompatibleLoaderState(
                    f"loader state {st.get('format')} v{st.get('version')} is not "
                    f"{STATE_FORMAT} v{STATE_VERSION}: cannot resume it exactly"
                )
            if st["fingerprint"] != self.fingerprint():
                raise IncompatibleLoaderState(
                    f"loader state was saved for {st['fingerprint']}, this loader reads "
                    f"{self.fingerprint()}: same manifest, split and seed are required"
                )
        states = sorted(states, key=lambda s: s["rank"])
        p = states[0]["plan"]
        old = Plan(
            self.plan.table,
            int(p["seed"]),
            int(p["streams"]),
            int(p["chunk"]),
            bool(p["shuffle"]),
            int(p["generation"]),
            {int(k): v for k, v in p["overrides"].items()},
        )
        same = states[0]["layout"] == self.layout() and len(states) in (1, self.world)
        if same:
            mine = next((s for s in states if s["rank"] == self.rank), None)
            if mine is None:
                raise IncompatibleLoaderState(f"no loader state for rank {self.rank}")
            self.plan = old
            self.cursors = {int(s): StreamCursor.from_dict(c) for s, c in mine["cursors"].items()}
            self.next_local = int(mine["next_local"])
            self.delivered = int(mine["delivered"])
            return
        cursors: dict[int, StreamCursor] = {}
        for st in states:
            for s, c in st["cursors"].items():
                cursors[int(s)] = StreamCursor.from_dict(c)
        if sorted(cursors) != list(range(old.streams)):
            raise IncompatibleLoaderState(
                f"resuming with another layout needs every rank's loader state; got streams "
                f"{sorted(cursors)} of {old.streams}"
            )
        new, start = translate(
            old, [cursors[s] for s in range(old.streams)], self.plan.streams, self.plan.chunk
        )
        log.info(
            "loader layout changed %s -> %s: re-planned the unconsumed samples of epochs %s",
            states[0]["layout"],
            self.layout(),
            sorted(new.overrides),
        )
        self.plan = new
        self.cursors = {s: StreamCursor(start.epoch) for s in self._my_streams()}
        self.next_local = 0
        self.delivered = sum(int(st["delivered"]) for st in states) // max(1, self.world)


def _has_threads() -> bool:
    import threading

    return threading.active_count() > 1


def _worker_init(_: int) -> None:
    """Workers decode and collate with numpy; one torch thread each (no oversubscription)."""
    torch.set_num_threads(1)
