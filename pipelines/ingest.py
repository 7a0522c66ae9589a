"""Ingest EEG/MEG sources into the per-recording Zarr corpus, on Ray.

    python pipelines/ingest.py --source s3://openneuro.org/ds004148 --anon --dest s3://bucket/corpus
    ray job submit --address http://HEAD:8265 -- python pipelines/ingest.py --catalog manifests/corpus.toml --dest s3://...

Steps: crawl every source into a frozen work list (DEST/crawl/), clean each recording as a
Ray task into DEST/recordings/<dataset>/<recording_id>.zarr, append a ledger row per
recording (DEST/ledger/), compact it into DEST/ledger.parquet and write DEST/summary.json.
Rerunning the same command resumes: finished recordings are not redone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ROOT: Path | None = Path(__file__).resolve().parents[1]
if not (ROOT / "brainomni").is_dir():
    ROOT = None  # an installed package, not a checkout
elif str(ROOT) not in sys.path:  # run from a checkout
    sys.path.insert(0, str(ROOT))

from brainomni.entry import (  # noqa: E402
    add_storage_retry_argument,
    apply_storage_retry,
    entrypoint,
    setup_logging,
)
from brainomni.ingest import IngestJob, PlanChanged, SerialExecutor, format_summary, run_job  # noqa: E402
from brainomni.ingest.sources_args import SOURCE_KEYS, parse_pairs, sources_from_args  # noqa: E402
from brainomni.signal.config import CleanConfig  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipelines/ingest.py",
        description=__doc__.split("\n\n")[0],
        epilog="Outputs under DEST: crawl/, recordings/, ledger.parquet, summary.json. "
        "Credentials come from the environment or an AWS profile, never from options.",
    )
    a = p.add_argument
    a(
        "--source",
        action="append",
        metavar="'URL [key=value ...]'",
        help="a dataset root (any fsspec URL), repeatable; BIDS is detected from "
        "dataset_description.json, other trees need kind=tuh name=... version=...; keys: "
        + ", ".join(SOURCE_KEYS),
    )
    a(
        "--catalog",
        action="append",
        metavar="FILE",
        help="a source catalog (.toml, .yaml or .txt, see docs/ingest-sources.md), repeatable",
    )
    a(
        "--dest",
        default="ingest-out",
        help="output root: local folder or URL (s3://bucket/prefix); default ./ingest-out",
    )
    a(
        "--address",
        default=None,
        help="Ray address (e.g. auto, ray://head:10001, 10.0.0.1:6379); default: start a local Ray",
    )
    a("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    a(
        "--max-in-flight",
        type=int,
        default=None,
        help="most recordings submitted at once (default: 2 x cluster CPUs)",
    )
    a(
        "--task-memory",
        type=float,
        default=1.0,
        help="GiB of memory Ray reserves per recording (default 1)",
    )
    a(
        "--config",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="CleanConfig overrides, e.g. --config sfreq=256 l_freq=0.5 (values parsed as JSON)",
    )
    a(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for the --source URLs (endpoint_url, profile, anon...; no secrets)",
    )
    a("--anon", action="store_true", help="read the --source URLs anonymously (public buckets)")
    a(
        "--dest-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for --dest",
    )
    a("--limit", type=int, default=None, help="ingest only the first N recordings of the crawl")
    a(
        "--recrawl",
        action="store_true",
        help="replace a different frozen work list under DEST instead of refusing to resume",
    )
    a(
        "--cache-dir",
        default=None,
        help="where workers stage remote multi-file recordings (a folder per task, removed after)",
    )
    a(
        "--executor",
        choices=("ray", "local", "serial"),
        default="ray",
        help="local (alias: serial) runs every recording in this process (debugging)",
    )
    a(
        "--progress-every",
        type=float,
        default=10.0,
        help="seconds between progress lines (default 10)",
    )
    a("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (secrets are redacted)")
    add_storage_retry_argument(p)
    return p


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    apply_storage_retry(args.storage_retry_s)
    import mne

    mne.set_log_level("ERROR")
    job = IngestJob(
        sources=tuple(
            sources_from_args(
                args.source,
                args.catalog,
                parse_pairs(args.storage_option, "--storage-option"),
                anon=args.anon,
            )
        ),
        dest=args.dest,
        dest_storage_options=parse_pairs(args.dest_option, "--dest-option"),
        config=CleanConfig.from_dict(parse_pairs(args.config, "--config")),
        recrawl=args.recrawl,
        limit=args.limit,
        cache_root=args.cache_dir,
        progress_every_s=args.progress_every,
    )
    if args.executor in ("local", "serial"):
        executor = SerialExecutor()
    else:
        from brainomni.pipeline.ray import RayExecutor

        executor = RayExecutor(
            address=args.address,
            num_cpus=args.num_cpus,
            max_in_flight=args.max_in_flight,
            task_memory=int(args.task_memory * 2**30),
            env_vars={"PYTHONPATH": str(ROOT)} if ROOT else {},
        )
    try:
        summary = run_job(job, executor)
    except PlanChanged as exc:
        logging.getLogger("ingest").error("%s", exc)
        return 2
    print(format_summary(summary))
    unavailable = summary["drops_by_reason"].get("failed: StorageUnavailable", {}).get("count", 0)
    if unavailable:
        print(
            f"{unavailable} recordings failed because object storage stayed unreachable for "
            "the whole retry window (--storage-retry-s); rerun the same command to redo them "
            "(finished recordings are kept)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
