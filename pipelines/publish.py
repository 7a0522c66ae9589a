"""Publish, verify and compare versioned dataset manifests.

    python pipelines/publish.py publish --shards URL --name NAME --version X.Y.Z [--out DIR]
    python pipelines/publish.py verify MANIFEST
    python pipelines/publish.py diff MANIFEST_A MANIFEST_B

Exit codes: 0 = what was checked holds (published; every shard verified; the two manifests
have the same content), 1 = it does not (leakage, version exists, corrupt/missing shard,
manifests differ), 2 = usage error, 3 = object storage unreachable (verify: the shards
could not be read within the retry window, so nothing is said about them), 4 = object
storage refused access (credentials, permissions, endpoint configuration).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys

from brainomni.entry import (
    EXIT_STORAGE_REFUSED,
    EXIT_STORAGE_UNREACHABLE,
    add_storage_retry_argument,
    apply_storage_retry,
    entrypoint,
    setup_logging,
)
from brainomni.manifests.catalog import DEFAULT_CATALOG, load_datasets
from brainomni.manifests.publish import ManifestExists, diff, load_manifest, publish, verify
from brainomni.splits import LeakageError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish", help="write an immutable manifest and dataset card")
    pub.add_argument("--shards", required=True, help="finished pack (folder or s3:// URL)")
    pub.add_argument("--name", required=True)
    pub.add_argument("--version", required=True, help="semantic version X.Y.Z")
    pub.add_argument("--out", default="manifests")
    pub.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    pub.add_argument(
        "--downstream-subjects",
        default=None,
        help="TSV of dataset<TAB>subject pairs that must not be in pretraining",
    )
    ver = sub.add_parser("verify", help="check every shard's sha256, bytes and sample count")
    ver.add_argument("manifest")
    dif = sub.add_parser("diff", help="sources, hours and configs that changed")
    dif.add_argument("a")
    dif.add_argument("b")
    add_storage_retry_argument(p)
    return p.parse_args(argv)


@entrypoint
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(logging.WARNING)
    apply_storage_retry(args.storage_retry_s)
    if args.cmd == "publish":
        pairs = []
        if args.downstream_subjects:
            with open(args.downstream_subjects) as f:
                pairs = [(r[0], r[1]) for r in csv.reader(f, delimiter="\t") if len(r) >= 2]
        try:
            path = publish(
                args.shards,
                args.name,
                args.version,
                args.out,
                catalog=load_datasets(args.catalog),
                downstream_subjects=pairs,
            )
        except (ManifestExists, LeakageError) as exc:
            print(f"publish refused: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0
    if args.cmd == "verify":
        rep = verify(load_manifest(args.manifest))
        for p in rep.problems:
            print(f"FAIL {p}")
        if rep.storage_error:
            print(f"STORAGE {rep.storage_error}")
        print(f"{rep.checked} shards checked, {len(rep.problems)} problems")
        if rep.problems or not rep.storage_error:
            return 0 if rep.ok else 1
        return EXIT_STORAGE_REFUSED if rep.storage_refused else EXIT_STORAGE_UNREACHABLE
    changes = diff(load_manifest(args.a), load_manifest(args.b))
    for line in changes:
        print(line)
    if not changes:
        print("no differences")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
