"""``brainomni pretrain`` and ``brainomni export`` (``tokenize`` is in :mod:`brainomni.cli_corpus`).

Registered on import by :mod:`brainomni.cli`. ``pretrain`` runs one process per device under
``torchrun`` or the ``deepspeed`` launcher; without a launcher it runs as a single process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket

from brainomni.cli import command
from brainomni.cli_common import UsageError, add_overrides, add_renamed

from .config import DEFAULT_RECIPE, RECIPES, apply_overrides, get_recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf_pretrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=("tokenizer", "omni"))
    p.add_argument(
        "--manifest",
        required=True,
        help="signal shard manifest (tokenizer; omni --source raw) or token manifest",
    )
    add_renamed(
        p,
        "--dest",
        "--out",
        required=True,
        dest="out",
        help="run folder (checkpoints, logs, plots)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=sorted(RECIPES),
        help="default: paper-tokenizer / paper-omni-tiny",
    )
    p.add_argument("--tokenizer", default=None, help="omni: exported tokenizer folder")
    p.add_argument(
        "--source",
        choices=("tokens", "raw"),
        default=None,
        help="omni: train from token shards (default) or raw 30-s shards",
    )
    p.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=None)
    p.add_argument("--offload", action="store_true", help="ZeRO optimizer offload to CPU")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--trust-unhashed",
        action="store_true",
        help="resume from a checkpoint whose meta.json records no file hashes (written by an "
        "older brainomni); its pickles still load weights_only",
    )
    p.add_argument("--shards-root", default=None, help="read shards from here (mirror/cache)")
    p.add_argument(
        "overrides",
        nargs="*",
        help="key=value config overrides right after the stage "
        "(optim.lr=1e-4 data.micro_batch=8); or --set key=value anywhere",
    )
    add_overrides(p, "training config (optim.lr=1e-4, data.micro_batch=8, model.X=...)")


def _run_pretrain(args: argparse.Namespace) -> int:
    for k, v in (
        ("RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
    ):
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank = int(os.environ["RANK"])
    cfg = get_recipe(args.recipe or DEFAULT_RECIPE[args.stage])
    if cfg.kind != args.stage:
        raise SystemExit(f"recipe {cfg.recipe!r} trains {cfg.kind}, not {args.stage}")
    sets = [f"data.manifest={json.dumps(args.manifest)}"]
    if args.tokenizer:
        sets.append(f"tokenizer={json.dumps(args.tokenizer)}")
    if args.source:
        sets.append(f"data.source={args.source}")
    if args.zero_stage is not None:
        sets.append(f"zero_stage={args.zero_stage}")
    if args.offload:
        sets.append("offload=true")
    if args.shards_root:
        sets.append(f"data.shards_root={json.dumps(args.shards_root)}")
    try:
        cfg = apply_overrides(cfg, sets + list(args.overrides) + list(args.sets))
    except ValueError as exc:  # an unknown field, a value the config refuses
        raise UsageError(f"config overrides: {exc}") from None
    from .checkpoint import CheckpointError
    from .trainer import pretrain

    try:
        res = pretrain(cfg, args.out, resume=args.resume, trust_unhashed=args.trust_unhashed)
    except CheckpointError as exc:
        raise SystemExit(f"brainomni pretrain: checkpoint refused: {exc}") from None
    if rank == 0:
        print(json.dumps({"step": res["step"], **res["last"]}, sort_keys=True))
    return 0


def _conf_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="checkpoint folder (.../checkpoints/step-N) or run folder")
    p.add_argument("out", help="export folder: model.safetensors + config.json")
    p.add_argument(
        "--trust-unhashed",
        action="store_true",
        help="export a checkpoint whose meta.json records no file hashes (older brainomni)",
    )
    p.add_argument(
        "--best",
        action="store_true",
        help="export the run's best validation checkpoint (RUN/best.json) instead of its latest",
    )


def _run_export(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .export import export

    try:
        out = export(args.ckpt, args.out, trust_unhashed=args.trust_unhashed, best=args.best)
    except CheckpointError as exc:
        raise SystemExit(f"brainomni export: checkpoint refused: {exc}") from None
    print(out)
    return 0


command(
    "pretrain", "pretrain the tokenizer or BrainOmni with DeepSpeed ZeRO (torchrun for many ranks)"
)((_conf_pretrain, _run_pretrain))
command("export", "export a checkpoint as one fp32 safetensors file + config.json")(
    (_conf_export, _run_export)
)
