"""The shard loader: partition, determinism, exact resume (same and other layouts), versioned
state, sha256 verification and skipping, S3 streaming."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from itertools import islice

import pytest
import torch

from brainomni.loader.loader import IncompatibleLoaderState, ShardLoader, read_manifest
from brainomni.loader.reader import ReadConfig

FAST = ReadConfig(attempts=2, backoff_s=0.0)


def _loaders(manifest, world, **kw):
    kw.setdefault("micro_batch", 3)
    kw.setdefault("chunk", 8)
    kw.setdefault("read_config", FAST)
    return [ShardLoader(str(manifest), "train", rank=r, world=world, **kw) for r in range(world)]


def _epoch_ids(batches):
    by: dict[int, list[int]] = {}
    for b in batches:
        by.setdefault(b["epoch"], []).extend(b["ids"])
    return by


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (3, 0), (2, 2)])
def test_every_sample_once_per_epoch(tok_manifest, world, workers):
    n = read_manifest(str(tok_manifest))["splits"]["train"]["samples"]
    per_epoch: dict[int, Counter] = {}
    orders = []
    for ld in _loaders(tok_manifest, world, workers=workers, max_epochs=2):
        batches = list(ld)
        assert all(1 <= b["size"] <= 3 for b in batches)
        for e, ids in _epoch_ids(batches).items():
            per_epoch.setdefault(e, Counter()).update(ids)
        orders.append([i for b in batches for i in b["ids"]])
    for e in (0, 1):
        assert per_epoch[e] == Counter(range(n)), e  # no duplicate, no loss, uneven shards
    again = [
        [i for b in ld for i in b["ids"]]
        for ld in _loaders(tok_manifest, world, workers=workers, max_epochs=2)
    ]
    assert again == orders  # deterministic from (seed, epoch)


def test_shuffle_changes_with_epoch_and_seed(tok_manifest):
    (a,) = _loaders(tok_manifest, 1, max_epochs=2)
    ids = _epoch_ids(list(a))
    assert ids[0] != ids[1]
    (b,) = _loaders(tok_manifest, 1, max_epochs=1, seed=7)
    assert _epoch_ids(list(b))[0] != ids[0]


def _same(b1, b2):
    assert b1["keys"] == b2["keys"] and b1["ids"] == b2["ids"]
    assert torch.equal(b1["x"], b2["x"]) and torch.equal(b1["mask"], b2["mask"])
    assert torch.equal(b1["pos"], b2["pos"])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(tok_manifest, workers):
    """Iterate, save, rebuild, load, and the next batches are identical to an unbroken run."""
    k, more = 5, 9
    full = [list(islice(iter(ld), k + more)) for ld in _loaders(tok_manifest, 2, workers=workers)]
    states = []
    for ld in _loaders(tok_manifest, 2, workers=workers):
        it = iter(ld)
        list(islice(it, k))
        states.append(json.loads(json.dumps(ld.state_dict())))  # JSON round trip
    for r, ld in enumerate(_loaders(tok_manifest, 2, workers=workers)):
        ld.load_state_dict(states)
        for b1, b2 in zip(full[r][k:], islice(iter(ld), more), strict=True):
            _same(b1, b2)


@pytest.mark.parametrize("new_world", [1, 3])
def test_resume_with_other_world_size_sees_the_rest_once(tok_manifest, new_world):
    n = read_manifest(str(tok_manifest))["splits"]["train"]["samples"]
    seen: Counter = Counter()
    states = []
    for r, ld in enumerate(_loaders(tok_manifest, 2, max_epochs=1)):
        for b in islice(iter(ld), 2 + r):  # ranks stopped at different points
            seen.update(b["ids"])
        states.append(ld.state_dict())
    first = sum(seen.values())
    # and a second layout change on top of the first
    mid = []
    for ld in _loaders(tok_manifest, new_world, max_epochs=1, micro_batch=2, chunk=5):
        ld.load_state_dict(states)
        for b in islice(iter(ld), 1):
            seen.update(b["ids"])
        mid.append(ld.state_dict())
    for ld in _loaders(tok_manifest, 2, max_epochs=1, workers=0):
        ld.load_state_dict(mid)
        for b in ld:
            assert b["epoch"] == 0
            seen.update(b["ids"])
    assert sum(seen.values()) > first
    assert seen == Counter(range(n))


def test_state_is_versioned_and_checked(tok_manifest):
    (ld,) = _loaders(tok_manifest, 1)
    next(iter(ld))
    st = ld.state_dict()
    assert st["version"] == 1 and st["layout"]["world"] == 1
    with pytest.raises(IncompatibleLoaderState, match="v99"):
        _loaders(tok_manifest, 1)[0].load_state_dict({**st, "version": 99})
    with pytest.raises(IncompatibleLoaderState, match="seed"):
        _loaders(tok_manifest, 1, seed=1)[0].load_state_dict(st)
    with pytest.raises(IncompatibleLoaderState, match="every rank"):
        _loaders(tok_manifest, 2)[0].load_state_dict(
            st | {"layout": st["layout"] | {"world": 2}, "plan": st["plan"] | {"streams": 2}}
        )


def test_corrupt_shard_is_retried_then_skipped_and_counted(tok_manifest, tmp_path, caplog):
    m = read_manifest(str(tok_manifest))
    root = tmp_path / "shards"
    shutil.copytree(m["shards_root"], root)
    train = [s for s in m["shards"] if s["split"] == "train"]
    bad = train[1]
    data = bytearray((root / bad["path"]).read_bytes())
    data[2000] ^= 0xFF  # inside the first member: digest mismatch
    (root / bad["path"]).write_bytes(bytes(data))
    (ld,) = _loaders(tok_manifest, 1, max_epochs=1, shards_root=str(root))
    ids = [i for b in ld for i in b["ids"]]
    st = ld.stats()
    assert st["shards_skipped"] == 1 and st["shard_retries"] == 2
    assert st["samples_skipped"] == bad["samples"] and "sha256 mismatch" in st["skipped"][0]
    assert len(ids) == len(set(ids)) == m["splits"]["train"]["samples"] - bad["samples"]
    assert "skipping shard" in caplog.text
    # without verification, a truncated shard still fails (short tar) and is skipped
    (root / bad["path"]).write_bytes(bytes(data[:3000]))
    (ld,) = _loaders(
        tok_manifest,
        1,
        max_epochs=1,
        shards_root=str(root),
        read_config=ReadConfig(verify_sha256=False, attempts=1),
    )
    list(ld)
    assert ld.stats()["shards_skipped"] == 1


def test_streams_from_s3(tok_manifest, s3_server, s3_bucket):
    m = read_manifest(str(tok_manifest))
    url = s3_server.upload_dir(m["shards_root"], f"{s3_bucket}/pack")
    (local,) = _loaders(tok_manifest, 1, max_epochs=1)
    (remote,) = _loaders(
        tok_manifest, 1, max_epochs=1, shards_root=url, storage_options=s3_server.storage_options
    )
    for b1, b2 in zip(local, remote, strict=True):
        _same(b1, b2)
    assert remote.stats()["shards_read"] == 12


def test_bucketing_reduces_padding(tok_manifest):
    waste = {}
    for bucket in (True, False):
        (ld,) = _loaders(tok_manifest, 1, max_epochs=1, bucket=bucket, micro_batch=4, chunk=16)
        list(ld)
        st = ld.stats()
        waste[bucket] = st["padded_elements"] / (st["padded_elements"] + st["real_elements"])
    assert waste[True] < waste[False]
