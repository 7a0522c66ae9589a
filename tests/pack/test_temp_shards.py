"""A killed pack leaves temporary tars; the rerun removes them (only its own, by name and
folder), for a local destination and for an object-store one (temp tars live locally)."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec

from brainomni.io.fs import get_fs
from brainomni.pack import get_profile
from brainomni.pack.run import pack, prepare_pack
from brainomni.pack.shards import clean_temp_shards, shard_urls, temp_shard_dir, write_shard
from brainomni.splits import SplitConfig


def _setup(corpus, dest):
    store = str(next(corpus.glob("recordings/ds004148/*.zarr")))
    cfg = get_profile("tokenizer-10s", target_shard_bytes=1_500_000)
    plan = prepare_pack([store], str(dest), cfg, SplitConfig())
    return store, cfg, plan


def test_rerun_removes_orphaned_temp_shards(corpus, tmp_path):
    dest = tmp_path / "pack"
    store, cfg, plan = _setup(corpus, dest)
    folder = dest / plan.shards[0].split
    folder.mkdir(parents=True)
    # what SIGKILLed shard writers leave: this naming, and the older random one
    orphans = [folder / ".tmp-shard-000000-k1ll3d.tar", folder / ".tmp-shard-x8f2q.tar"]
    keep = [
        folder / "notes.tar",
        folder / ".tmp-other.tar",
        dest / "elsewhere" / ".tmp-shard-1.tar",
    ]
    for p in orphans + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial tar")
    index = pack([store], str(dest), cfg)
    assert index["shards"] and not any(p.exists() for p in orphans)
    assert all(p.read_bytes() == b"partial tar" for p in keep)
    split_dirs = {dest / s.split for s in plan.shards}
    assert not [p for d in split_dirs for p in d.glob(".tmp-shard-*")]


def test_object_store_temp_shards_are_cleaned(corpus, tmp_path):
    _, _, plan = _setup(corpus, tmp_path / "plan-only")
    spec = plan.shards[0]
    dest = f"memory://{tmp_path.name}/pack"
    local = Path(temp_shard_dir(dest, spec.split))
    assert local.is_absolute() and local.parent.name.startswith("brainomni-pack-")
    fs = fsspec.filesystem("memory")
    try:
        local.mkdir(parents=True, exist_ok=True)
        mine = local / f".tmp-shard-{spec.index:06d}-k1ll3d.tar"
        other_shard = local / f".tmp-shard-{spec.index + 1:06d}-k1ll3d.tar"
        for p in (mine, other_shard):
            p.write_bytes(b"partial")
        idx = write_shard(plan, spec.index, dest, resume=False)  # on a worker: its own shard
        assert not mine.exists() and other_shard.exists()
        tar_url, _ = shard_urls(dest, spec)
        assert idx["samples"] > 0
        _, tar_path = get_fs(tar_url)
        assert fs.size(tar_path) == idx["bytes"]
        assert not list(local.glob(f".tmp-shard-{spec.index:06d}-*"))
        assert clean_temp_shards(dest, [spec.split]) == [str(other_shard)]  # the rerun sweep
        assert not other_shard.exists()
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)
        if fs.exists(f"/{tmp_path.name}"):
            fs.rm(f"/{tmp_path.name}", recursive=True)
