"""Pack recording stores into WebDataset shards, on Ray or locally.

    python pipelines/pack.py --store s3://bucket/corpus --profile tokenizer-10s \
        --dest s3://bucket/packs/tokenizer-10s [--address auto] [--dtype float32]

Plans once (a frozen ``plan.json`` under DEST), runs one task per shard, writes
``index.json`` last. Reruns skip finished shards and give byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from brainomni.entry import (
    add_storage_retry_argument,
    apply_storage_retry,
    entrypoint,
    setup_logging,
)
from brainomni.executors.ray_executor import ray_map
from brainomni.manifests.catalog import DEFAULT_CATALOG, load_datasets
from brainomni.pack import PROFILES, get_profile
from brainomni.pack.run import pack, summary_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", required=True, help="corpus root (or one store) to pack")
    p.add_argument("--profile", required=True, choices=sorted(PROFILES))
    p.add_argument("--dest", required=True, help="pack destination (folder or s3:// URL)")
    p.add_argument("--dtype", choices=("float16", "float32"), default=None)
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--stride-s", type=float, default=None)
    p.add_argument("--target-shard-mb", type=float, default=None)
    p.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="unseen/downstream lists")
    p.add_argument("--split-key", default=None, help="key of the subject hash")
    p.add_argument("--executor", choices=("ray", "local"), default="ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs")
    add_storage_retry_argument(p)
    return p.parse_args(argv)


@entrypoint
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    apply_storage_retry(args.storage_retry_s)
    overrides = {
        k: v
        for k, v in (
            ("dtype", args.dtype),
            ("window_s", args.window_s),
            ("stride_s", args.stride_s),
        )
        if v is not None
    }
    if args.target_shard_mb:
        overrides["target_shard_bytes"] = int(args.target_shard_mb * 1024 * 1024)
    config = get_profile(args.profile, **overrides)
    split_kw = {"key": args.split_key} if args.split_key else {}
    split_config = load_datasets(args.catalog).split_config(**split_kw)
    map_fn = ray_map(args.address, args.num_cpus) if args.executor == "ray" else map
    index = pack(args.store, args.dest, config, split_config, map_fn=map_fn)
    print(summary_table(index))
    print(
        json.dumps(
            {"dest": args.dest, "shards": len(index["shards"]), "plan_hash": index["plan_hash"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
