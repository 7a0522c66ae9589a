"""``make demo``: the main job end to end on embedded defaults, in minutes on 2 cores.

1. A small BIDS dataset (EEG and MEG, several vendors) written with mne-bids from the real
   recordings in ``../shared/data/meeg`` (tiled to a minute or two where they are short),
   or generated recordings on a standard montage when the real ones are absent.
2. The Ray ingest job (local Ray, local folders) -> per-recording Zarr stores + ledger.
3. Pack into WebDataset shards for both stages and publish versioned manifests.
4. When the training stack is installed: pretrain the tokenizer, tokenize once, pretrain
   BrainOmni tiny, export it, and fine-tune it on a planted-effect task built from the
   shared recordings next to the from-scratch and band-power baselines; a short report.

Every step calls the library (``brainomni``) in this process; nothing shells out.

    python -m demo [--out demo-out] [--synthetic] [--skip-train] [--skip-finetune] [--steps N]
                   [--tokenizer-steps N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from brainomni.cli_common import setup_logging
from demo.bids import ROOT, build_bids

log = logging.getLogger("demo")

PROFILES = ("tokenizer-10s", "omni-30s")


def _timed(what: str):
    """Context manager logging how long a step took."""
    from contextlib import contextmanager

    @contextmanager
    def cm():
        log.info("%s ...", what)
        t0 = time.perf_counter()
        yield
        log.info("%s done in %.1f s", what, time.perf_counter() - t0)

    return cm()


def ingest(bids: Path, corpus: Path, num_cpus: int = 2) -> dict:
    """The Ray ingest job over ``bids`` into ``corpus`` (local Ray); its summary."""
    import mne

    from brainomni.ingest import IngestJob, format_summary, run_job
    from brainomni.ingest.sources_args import sources_from_args
    from brainomni.pipeline.ray import RayExecutor
    from brainomni.signal.config import DEFAULT_CONFIG

    mne.set_log_level("ERROR")
    job = IngestJob(
        sources=tuple(sources_from_args([str(bids)], None, {}, anon=False)),
        dest=str(corpus),
        config=DEFAULT_CONFIG,
    )
    executor = RayExecutor(num_cpus=num_cpus, env_vars={"PYTHONPATH": str(ROOT)})
    summary = run_job(job, executor)
    print(format_summary(summary))
    return summary


def pack_and_publish(corpus: Path, out: Path) -> dict[str, Path]:
    """Shards of both stages (local executor) and a verified manifest of each."""
    from brainomni.manifests.catalog import DEFAULT_CATALOG, load_datasets
    from brainomni.manifests.publish import load_manifest, publish
    from brainomni.manifests.verify import verify
    from brainomni.pack import get_profile
    from brainomni.pack.run import pack

    catalog = load_datasets(DEFAULT_CATALOG)
    manifests = {}
    for profile in PROFILES:
        shards = out / "shards" / profile
        with _timed(f"pack {profile}"):
            pack(
                str(corpus / "recordings"),
                str(shards),
                get_profile(profile),
                catalog.split_config(),
                map_fn=map,
            )
        mdir, name = out / "manifests", f"demo-{profile}"
        mfile = mdir / name / "1.0.0" / "manifest.json"
        if not mfile.exists():  # a rerun into the same folder keeps its published manifest
            mfile = publish(str(shards), name, "1.0.0", mdir, catalog=catalog)
        rep = verify(load_manifest(mfile))
        if not rep.ok:
            raise RuntimeError(f"{mfile}: verify found {rep.problems[:3]} {rep.storage_error}")
        log.info("published and verified %s (%d shards)", mfile, rep.checked)
        manifests[profile] = Path(mfile)
    return manifests


def _train_available() -> bool:
    try:
        import brainomni.train.cli  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    ap.add_argument(
        "--synthetic", action="store_true", help="generate recordings even when the real ones exist"
    )
    ap.add_argument("--skip-train", action="store_true", help="stop after publishing the manifests")
    ap.add_argument(
        "--skip-finetune", action="store_true", help="stop after pretraining (no planted task)"
    )
    ap.add_argument(
        "--steps", type=int, default=30, help="BrainOmni pretraining steps (default 30)"
    )
    ap.add_argument(
        "--tokenizer-steps",
        type=int,
        default=None,
        help="BrainTokenizer pretraining steps (default: demo.train.TOKENIZER_STEPS)",
    )
    args = ap.parse_args(argv)
    setup_logging(logging.INFO)
    log.setLevel(logging.INFO)  # the brainomni commands set the root logger to WARNING
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    with _timed("BIDS dataset"):
        bids = build_bids(out / "bids", synthetic=args.synthetic)
    corpus = out / "corpus"
    with _timed("ingest"):
        ingest(bids, corpus)
    manifests = pack_and_publish(corpus, out)

    finetune = None
    if not args.skip_train and _train_available():
        from demo.train import TOKENIZER_STEPS, train_and_report

        tok_steps = TOKENIZER_STEPS if args.tokenizer_steps is None else args.tokenizer_steps
        report = train_and_report(out, manifests, steps=args.steps, tokenizer_steps=tok_steps)
        if not args.skip_finetune:
            from demo.finetune import finetune_and_report

            finetune = finetune_and_report(out, report, synthetic=args.synthetic)
    elif not args.skip_train:
        log.warning("training stack not available (brainomni.train): stopping after the manifests")

    summary = (
        json.loads((corpus / "summary.json").read_text())
        if (corpus / "summary.json").exists()
        else {}
    )
    print("\n== demo finished in %.0f s ==" % (time.perf_counter() - t0))
    print(f"BIDS dataset : {bids}")
    print(f"corpus       : {corpus}  (ledger.parquet, summary.json, recordings/)")
    if summary:
        print(f"outcomes     : {summary.get('by_outcome')}, hours {summary.get('hours')}")
    for p, m in manifests.items():
        print(f"manifest     : {p}: {m}")
    if (out / "report.md").exists():
        print(f"report       : {out / 'report.md'}")
    if finetune:
        print("planted task : " + finetune)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
