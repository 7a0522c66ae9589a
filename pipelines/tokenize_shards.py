"""Tokenize the 30-s shards once with a trained tokenizer, on Ray or locally.

    python pipelines/tokenize_shards.py --tokenizer exports/tok \
        --manifest manifests/brainomni-omni/1.0.0/manifest.json \
        --dest s3://bucket/tokens/v1 [--address auto] [--batch-size 16] \
        [--overlap 0.25] [--shards-root URL] [--no-verify]

One task per shard (:func:`brainomni.tokenize.tokenize_shard`); ``DEST/manifest.json`` is
written last. Reruns skip shards already tokenized by the same tokenizer. The tokenizer
folder must be readable at the same path on every node.
"""

from __future__ import annotations

import argparse
import json
import logging

from brainomni.entry import (
    add_storage_retry_argument,
    apply_storage_retry,
    entrypoint,
    setup_logging,
)
from brainomni.executors.ray_executor import ray_map
from brainomni.tokenize import add_corpus_arguments, tokenize_from_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_corpus_arguments(p)
    p.add_argument("--executor", choices=("ray", "local"), default="ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs")
    p.add_argument("--cpus-per-task", type=float, default=2.0)
    add_storage_retry_argument(p)
    return p.parse_args(argv)


@entrypoint
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    apply_storage_retry(args.storage_retry_s)
    map_fn = (
        map
        if args.executor == "local"
        else ray_map(args.address, args.num_cpus, cpus_per_task=args.cpus_per_task)
    )
    m = tokenize_from_args(args, map_fn=map_fn)
    print(json.dumps({"splits": m["splits"], "content_hash": m["content_hash"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
