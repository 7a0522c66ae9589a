"""``brainomni finetune`` and ``brainomni evaluate downstream``.

Registered on import by :mod:`brainomni.cli`. One process per device under ``torchrun`` or the
``deepspeed`` launcher; without a launcher a single process. ``evaluate downstream`` is
registered with :func:`brainomni.cli.evaluate_command`, like every evaluation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path

from brainomni.cli import command, evaluate_command


def load_labelled_set(spec: str):
    """``--set``: a ``.npz`` written by :func:`brainomni.evaluation.setfile.save_set`, or
    ``package.module:function`` returning a :class:`LabelledSet` (e.g. a recipe builder)."""
    from .data import LabelledSet
    from .setfile import load_set

    if not Path(spec).exists() and ":" in spec:
        mod, _, fn = spec.partition(":")
        obj = getattr(importlib.import_module(mod), fn)()
        if not isinstance(obj, LabelledSet):
            raise SystemExit(f"--set {spec}: returned {type(obj).__name__}, not a LabelledSet")
        return obj
    if not Path(spec).is_file():
        raise SystemExit(
            f"--set {spec}: no such file (give a .npz labelled set or module:function)"
        )
    try:
        return load_set(spec)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


def _common(p: argparse.ArgumentParser) -> None:
    from .finetune import RECIPES

    p.add_argument(
        "--set", dest="set_spec", required=True, help="labelled set: FILE.npz or module:function"
    )
    p.add_argument("--checkpoint", required=True, help="exported model folder (`brainomni export`)")
    p.add_argument(
        "--out", required=True, help="run folder (units, results.json, results.md, plots)"
    )
    p.add_argument("--recipe", default="paper-finetune", choices=sorted(RECIPES))
    p.add_argument("--frozen", action="store_true", help="freeze the backbone (head only)")
    p.add_argument(
        "--sfreq",
        type=float,
        default=None,
        help="sampling rate of the windows in Hz (default: the set's meta['sfreq'], else 256)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "overrides", nargs="*", help="fine-tuning config overrides: epochs=10 lrs=[1e-5]"
    )


def _setup(args):
    from .finetune import apply_overrides, get_recipe, setup_distributed

    cfg = get_recipe(args.recipe)
    sets = ["frozen=true"] if args.frozen else []
    cfg = apply_overrides(cfg, sets + list(args.overrides))
    windows = load_labelled_set(args.set_spec)  # a bad set fails before any process group
    if args.sfreq is None:
        args.sfreq = float(windows.meta.get("sfreq", 256.0))
    ctx = setup_distributed()
    logging.getLogger("brainomni").setLevel(
        logging.DEBUG if args.verbose else logging.INFO if ctx.rank == 0 else logging.WARNING
    )
    return cfg, ctx, windows


def _finish(args, ctx, windows, cfg, entries) -> int:
    from .report import write_report

    if ctx.rank == 0:
        res = write_report(args.out, windows, cfg, entries, plots=not args.no_plots)
        print(
            json.dumps(
                {
                    m: {k: v["mean"] for k, v in r["summary"].items()}
                    for m, r in res["models"].items()
                },
                sort_keys=True,
            )
        )
    return 0


def _conf_finetune(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--init",
        choices=("pretrained", "random"),
        default="pretrained",
        help="the checkpoint's weights, or the same architecture re-initialised",
    )


def _run_finetune(args: argparse.Namespace) -> int:
    from .finetune import Backbone, run_grid

    cfg, ctx, windows = _setup(args)
    entry = run_grid(windows, args.out, cfg, Backbone(args.checkpoint, args.init), ctx=ctx)
    return _finish(args, ctx, windows, cfg, [entry])


def _conf_downstream(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--baselines",
        default="random-init,bandpower",
        help="comma-separated: random-init (same architecture, random weights), bandpower "
        "(log band power + logistic regression); '' for none",
    )


def _run_downstream(args: argparse.Namespace) -> int:
    from .baselines import run_bandpower
    from .finetune import Backbone, run_grid

    wanted = [b for b in args.baselines.split(",") if b]
    unknown = sorted(set(wanted) - {"random-init", "bandpower"})
    if unknown:
        raise SystemExit(f"--baselines: unknown {unknown}; choose random-init, bandpower")
    cfg, ctx, windows = _setup(args)
    entries = [run_grid(windows, args.out, cfg, Backbone(args.checkpoint), ctx=ctx)]
    if "random-init" in wanted:
        entries.append(
            run_grid(windows, args.out, cfg, Backbone(args.checkpoint, "random"), ctx=ctx)
        )
    if "bandpower" in wanted:
        entries.append(run_bandpower(windows, args.out, cfg, sfreq=args.sfreq, rank=ctx.rank))
    return _finish(args, ctx, windows, cfg, entries)


evaluate_command(
    "downstream", "fine-tune + baselines under the same cross-subject folds; results.md"
)((_conf_downstream, _run_downstream))
command("finetune")((_conf_finetune, _run_finetune))
