"""The corpus stages as ``brainomni`` commands: ``ingest``, ``pack``, ``publish``, ``verify``,
``diff``, ``tokenize``. Registered on import by :mod:`brainomni.cli`; ``pipelines/*.py`` (the
Ray job entry points) run the same commands. Heavy imports happen when a command runs.

Exit codes: 0 done / what was checked holds; 1 it does not (publish refused, a shard failed
verification, two manifests differ); 2 usage error or a changed frozen work list (ingest);
3 / 4 object storage unreachable / refused (:mod:`brainomni.entry`).

Size: six commands, each a short configure/run pair sharing the executor and storage helpers
above them; a little over 400 lines, one file per command would repeat those helpers' imports.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from .cli import command
from .cli_common import (
    UsageError,
    add_overrides,
    add_ray_args,
    add_source_dest,
    add_storage_args,
    check_overrides,
    dest_storage_options,
    executor_name,
    parse_kv,
    storage_options,
)

log = logging.getLogger("brainomni.cli")


def _checkout_root() -> Path | None:
    """The repository root when brainomni runs from a checkout (Ray workers get it on their
    ``PYTHONPATH``); ``None`` for an installed package."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pipelines").is_dir() and (root / "brainomni").is_dir() else None


def _executor(args: argparse.Namespace, cpus_per_task: float = 1.0):
    """The stage core's executor named by ``--executor`` (Ray options ignored by ``local``)."""
    from .pipeline import get_executor

    root = _checkout_root()
    return get_executor(
        executor_name(args),
        address=args.address,
        num_cpus=args.num_cpus,
        task_cpus=cpus_per_task,
        env_vars={"PYTHONPATH": str(root)} if root else None,
    )


# --------------------------------------------------------------------------- ingest


def _clean_config(sets: list[str]):
    from .signal.config import CleanConfig

    overrides = check_overrides(CleanConfig, parse_kv(sets, "--set"))
    try:
        return CleanConfig.from_dict(overrides)
    except ValueError as exc:
        raise UsageError(f"--set: {exc}") from None


def _conf_ingest(p: argparse.ArgumentParser) -> None:
    from .ingest.sources_args import SOURCE_KEYS

    p.epilog = (
        "Outputs under DEST: crawl/, recordings/, ledger.parquet, summary.json. Rerunning the "
        "same command resumes. Credentials come from the environment or an AWS profile, never "
        "from options."
    )
    p.add_argument(
        "--source",
        action="append",
        metavar="'URL [key=value ...]'",
        help="a dataset root (any fsspec URL), repeatable; BIDS is detected from "
        "dataset_description.json, other trees need kind=tuh name=... version=...; keys: "
        + ", ".join(SOURCE_KEYS),
    )
    p.add_argument(
        "--catalog",
        action="append",
        metavar="FILE",
        help="a source catalog (.toml, .yaml or .txt, see docs/ingest-sources.md), repeatable",
    )
    add_source_dest(
        p,
        dest="output root: local folder or URL (s3://bucket/prefix); default ./ingest-out",
        dest_default="ingest-out",
    )
    add_overrides(p, "cleaning config (CleanConfig, e.g. sfreq=256 l_freq=0.5)", "--config")
    p.add_argument("--limit", type=int, default=None, help="ingest only the first N recordings")
    p.add_argument(
        "--recrawl",
        action="store_true",
        help="replace a different frozen work list under DEST instead of refusing to resume",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where workers stage remote multi-file recordings (a folder per task, removed after)",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=10.0,
        help="seconds between progress lines (default 10)",
    )
    add_storage_args(p)
    add_ray_args(p)
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="ray: most recordings submitted at once (default: 2 x cluster CPUs)",
    )
    p.add_argument(
        "--task-memory",
        type=float,
        default=1.0,
        help="ray: GiB of memory reserved per recording (default 1)",
    )


def _run_ingest(args: argparse.Namespace) -> int:
    import mne

    from .ingest import IngestJob, PlanChanged, SerialExecutor, format_summary, run_job
    from .ingest.sources_args import sources_from_args

    mne.set_log_level("ERROR")
    if not args.source and not args.catalog:
        raise UsageError("nothing to ingest: give --source URL or --catalog FILE")
    job = IngestJob(
        sources=tuple(sources_from_args(args.source, args.catalog, storage_options(args) or {})),
        dest=args.dest,
        dest_storage_options=dest_storage_options(args) or {},
        config=_clean_config(args.sets),
        recrawl=args.recrawl,
        limit=args.limit,
        cache_root=args.cache_dir,
        progress_every_s=args.progress_every,
    )
    if executor_name(args) == "local":
        executor = SerialExecutor()
    else:
        from .pipeline.ray import RayExecutor

        root = _checkout_root()
        executor = RayExecutor(
            address=args.address,
            num_cpus=args.num_cpus,
            max_in_flight=args.max_in_flight,
            task_memory=int(args.task_memory * 2**30),
            env_vars={"PYTHONPATH": str(root)} if root else {},
        )
    try:
        summary = run_job(job, executor)
    except PlanChanged as exc:
        logging.getLogger("brainomni.ingest").error("%s", exc)
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


# --------------------------------------------------------------------------- pack


def _conf_pack(p: argparse.ArgumentParser) -> None:
    from .manifests.catalog import DEFAULT_CATALOG
    from .pack import PROFILES

    p.epilog = (
        "Plans once (a frozen plan.json under DEST), runs one task per shard, writes "
        "index.json last. Reruns skip finished shards and give byte-identical output."
    )
    add_source_dest(
        p,
        source="corpus root (or one recording store) to pack: folder or URL",
        source_old=("--store",),
        dest="pack destination: folder or URL (s3://bucket/packs/NAME)",
    )
    p.add_argument("--profile", required=True, choices=sorted(PROFILES))
    p.add_argument("--dtype", choices=("float16", "float32"), default=None)
    p.add_argument("--window-s", type=float, default=None)
    p.add_argument("--stride-s", type=float, default=None)
    p.add_argument("--target-shard-mb", type=float, default=None)
    add_overrides(p, "pack config (PackConfig field)")
    p.add_argument("--catalog", default=str(DEFAULT_CATALOG), help="unseen/downstream lists")
    p.add_argument("--split-key", default=None, help="key of the subject hash")
    add_storage_args(p)
    add_ray_args(p)


def _run_pack(args: argparse.Namespace) -> int:
    from .manifests.catalog import load_datasets
    from .pack import PackConfig, get_profile
    from .pack.run import pack, summary_table

    overrides = check_overrides(PackConfig, parse_kv(args.sets, "--set"))
    for key in ("dtype", "window_s", "stride_s"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.target_shard_mb:
        overrides["target_shard_bytes"] = int(args.target_shard_mb * 1024 * 1024)
    try:
        config = get_profile(args.profile, **overrides)
    except ValueError as exc:
        raise UsageError(f"--profile {args.profile} with {overrides}: {exc}") from None
    split_kw = {"key": args.split_key} if args.split_key else {}
    split_config = load_datasets(args.catalog).split_config(**split_kw)
    index = pack(
        args.source,
        args.dest,
        config,
        split_config,
        storage_options=storage_options(args),
        dest_storage_options=dest_storage_options(args),
        executor=_executor(args),
    )
    print(summary_table(index))
    print(
        json.dumps(
            {"dest": args.dest, "shards": len(index["shards"]), "plan_hash": index["plan_hash"]}
        )
    )
    return 0


# --------------------------------------------------------------------------- manifests


def _conf_publish(p: argparse.ArgumentParser) -> None:
    from .manifests.catalog import DEFAULT_CATALOG

    add_source_dest(
        p,
        source="a finished pack: folder or URL",
        source_old=("--shards",),
        dest="manifests folder; the manifest goes to DEST/NAME/VERSION/ (default manifests)",
        dest_old=("--out",),
        dest_default="manifests",
    )
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True, help="semantic version X.Y.Z")
    p.add_argument("--catalog", default=str(DEFAULT_CATALOG))
    p.add_argument(
        "--downstream-subjects",
        default=None,
        help="TSV of dataset<TAB>subject pairs that must not be in pretraining",
    )
    add_storage_args(p, dest=False)


def _run_publish(args: argparse.Namespace) -> int:
    from .manifests.catalog import load_datasets
    from .manifests.publish import ManifestExists, publish
    from .splits import LeakageError

    pairs = []
    if args.downstream_subjects:
        with open(args.downstream_subjects) as f:
            pairs = [(r[0], r[1]) for r in csv.reader(f, delimiter="\t") if len(r) >= 2]
    try:
        path = publish(
            args.source,
            args.name,
            args.version,
            args.dest,
            catalog=load_datasets(args.catalog),
            downstream_subjects=pairs,
            storage_options=storage_options(args),
        )
    except (ManifestExists, LeakageError) as exc:
        print(f"publish refused: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _conf_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="a published manifest.json")
    add_storage_args(p, dest=False)


def _run_verify(args: argparse.Namespace) -> int:
    from .io.retry import EXIT_STORAGE_REFUSED, EXIT_STORAGE_UNREACHABLE
    from .manifests.publish import load_manifest
    from .manifests.verify import verify

    rep = verify(load_manifest(args.manifest), storage_options(args))
    for p in rep.problems:
        print(f"FAIL {p}")
    if rep.storage_error:
        print(f"STORAGE {rep.storage_error}")
    print(f"{rep.checked} shards checked, {len(rep.problems)} problems")
    if rep.problems or not rep.storage_error:
        return 0 if rep.ok else 1
    return EXIT_STORAGE_REFUSED if rep.storage_refused else EXIT_STORAGE_UNREACHABLE


def _conf_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="MANIFEST_A")
    p.add_argument("b", metavar="MANIFEST_B")


def _run_diff(args: argparse.Namespace) -> int:
    from .manifests.diff import diff
    from .manifests.publish import load_manifest

    changes = diff(load_manifest(args.a), load_manifest(args.b))
    for line in changes:
        print(line)
    if not changes:
        print("no differences")
    return 1 if changes else 0


# --------------------------------------------------------------------------- tokenize


def _conf_tokenize(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "One task per shard; DEST/manifest.json is written last. Reruns skip shards already "
        "tokenized by the same tokenizer. With --executor ray the tokenizer folder must be "
        "readable at the same path on every node."
    )
    p.add_argument("--tokenizer", required=True, help="exported tokenizer folder")
    add_source_dest(
        p,
        source="manifest of the 30-s signal shards (manifest.json)",
        source_old=("--manifest",),
        source_dest="manifest",
        dest="where the token shards and their manifest go (folder or URL)",
    )
    p.add_argument("--splits", default="", help="comma-separated splits (default: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap ratio")
    p.add_argument(
        "--shards-root", default=None, help="where the signal shards are (default: manifest's)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip shard sha256 checks")
    add_storage_args(p)
    add_ray_args(p, default="local")
    p.add_argument("--cpus-per-task", type=float, default=2.0, help="ray: CPUs per shard task")


def _run_tokenize(args: argparse.Namespace) -> int:
    from .tokenize import tokenize_corpus

    m = tokenize_corpus(
        args.tokenizer,
        args.manifest,
        args.dest,
        splits=[s for s in args.splits.split(",") if s] or None,
        batch_size=args.batch_size,
        overlap_ratio=args.overlap,
        shards_root=args.shards_root,
        verify_sha256=not args.no_verify,
        storage_options=storage_options(args),
        dest_storage_options=dest_storage_options(args),
        executor=_executor(args, args.cpus_per_task),
    )
    print(
        json.dumps(
            {
                "manifest": f"{args.dest.rstrip('/')}/manifest.json",
                "splits": m["splits"],
                "content_hash": m["content_hash"],
            }
        )
    )
    return 0


command("ingest", "crawl sources and clean every recording into the Zarr corpus (Ray)")(
    (_conf_ingest, _run_ingest)
)
command("pack", "pack recording stores into WebDataset shards of one profile (Ray)")(
    (_conf_pack, _run_pack)
)
command(
    "publish",
    "write an immutable manifest and dataset card for a finished pack",
    log_level=logging.WARNING,
)((_conf_publish, _run_publish))
command(
    "verify",
    "check every shard of a manifest: sha256, bytes, sample count",
    log_level=logging.WARNING,
)((_conf_verify, _run_verify))
command(
    "diff",
    "sources, hours and configs that changed between two manifests",
    log_level=logging.WARNING,
)((_conf_diff, _run_diff))
command("tokenize", "tokenize 30-s shards once into token shards with their own manifest")(
    (_conf_tokenize, _run_tokenize)
)
