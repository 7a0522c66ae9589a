"""``brainomni evaluate recon`` and ``brainomni embed``; registered on import by
:mod:`brainomni.cli` (heavy imports happen when a command runs)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from brainomni.cli import command, evaluate_command
from brainomni.cli_common import add_renamed


def _conf_recon(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, help="exported tokenizer (brainomni export)")
    p.add_argument("--manifest", required=True, help="signal shard manifest (tokenizer-10s)")
    add_renamed(
        p, "--dest", "--out", dest="out", default=None, help="folder for recon.json and the plots"
    )
    p.add_argument(
        "--split",
        dest="splits",
        action="append",
        default=None,
        help="a split to evaluate (repeatable; default: val and every unseen-* split)",
    )
    p.add_argument(
        "--like-run",
        default=None,
        metavar="RUN",
        help="use this pretraining run's validation batching and batch cap: the numbers then "
        "equal what it logged for the same checkpoint",
    )
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--max-batches", type=int, default=None, help="default: the whole split")
    p.add_argument("--shards-root", default=None, help="read shards from here (mirror/cache)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-plots", action="store_true")


def _run_recon(args: argparse.Namespace) -> int:
    from .recon import evaluate_recon

    if args.micro_batch < 1 or (args.max_batches is not None and args.max_batches < 1):
        raise SystemExit("brainomni evaluate recon: --micro-batch and --max-batches must be >= 1")
    try:
        rep = evaluate_recon(
            args.tokenizer,
            args.manifest,
            out=args.out,
            splits=args.splits,
            like_run=args.like_run,
            micro_batch=args.micro_batch,
            chunk=max(512, args.micro_batch),
            max_batches=args.max_batches,
            shards_root=args.shards_root,
            device=args.device,
            plots=not args.no_plots,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"brainomni evaluate recon: {exc}") from None
    print(json.dumps(rep, indent=1, sort_keys=True))
    return 0


def _conf_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="recording (any format brainomni reads): local path")
    p.add_argument("--model", required=True, help="exported tokenizer or BrainOmni folder")
    add_renamed(
        p,
        "--dest",
        "--out",
        required=True,
        dest="out",
        help="output .npz (tokens, features, starts, ...)",
    )
    p.add_argument("--format", dest="fmt", default=None, help="reader key (default: detected)")
    p.add_argument(
        "--epochs-s",
        type=float,
        default=None,
        help="cut the recording into fixed-length epochs of this many seconds (one window each)",
    )
    p.add_argument("--window-s", type=float, default=None, help="window length in seconds")
    p.add_argument("--line-freq", type=float, default=None, help="line frequency in Hz")
    p.add_argument("--bads", default="", help="comma-separated channel names to treat as bad")
    p.add_argument("--device", default="cpu")


def _run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from brainomni.errors import RecordingOutcome
    from brainomni.readers import open_raw

    from .embed import embed

    bads = tuple(b.strip() for b in args.bads.split(",") if b.strip())
    try:
        with contextlib.redirect_stdout(sys.stderr), open_raw(args.source, fmt=args.fmt) as op:
            data = op.raw.load_data()
            if args.epochs_s:
                import mne

                data = mne.make_fixed_length_epochs(
                    data, duration=args.epochs_s, preload=True, verbose="error"
                )
            emb = embed(
                data,
                args.model,
                window_s=args.window_s,
                line_freq=args.line_freq,
                bads=bads,
                device=args.device,
            )
    except RecordingOutcome as exc:
        print(
            json.dumps(
                {
                    "source": args.source,
                    "outcome": exc.outcome,
                    "error_class": exc.error_class,
                    "reason": exc.reason,
                }
            )
        )
        return 2
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"brainomni embed: {args.source}: {exc}") from None
    np.savez(
        args.out,
        tokens=emb.tokens,
        features=emb.features,
        starts=emb.starts,
        epochs=emb.epochs,
        sensor_type=emb.sensor_type,
        ch_names=np.asarray(emb.ch_names, dtype=str),
    )
    print(json.dumps({"source": args.source, "outcome": "ok", "out": args.out, **emb.to_summary()}))
    return 0


evaluate_command(
    "recon",
    "zero-shot reconstruction (MSE, MAE, PCC, amplitude, phase) per sensor type and device",
)((_conf_recon, _run_recon))
command("embed", "tokens and features of one recording (any device) under an exported model")(
    (_conf_embed, _run_embed)
)
