"""``brainomni finetune``, ``brainomni evaluate downstream`` and ``brainomni labelled-set``.

Registered on import by :mod:`brainomni.cli`. One process per device under ``torchrun`` or the
``deepspeed`` launcher; without a launcher a single process. ``evaluate downstream`` is
registered with :func:`brainomni.cli.evaluate_command`, like every evaluation.

Data comes either as a saved labelled set (``--set DIR``: the folder
:func:`brainomni.evaluation.data.save_labelled_set` writes, ``labelled_set.json`` +
``windows.tar``) or as the user has it: ``--recipe NAME --source ROOT`` (a BIDS or TUH root)
builds the set with :func:`brainomni.evaluation.windows.build_labelled_set` and caches it
under ``--work-dir`` (``sets/<recipe>-<key>/``, the key hashing the recipe, the cleaning
config, the source and the label table), so that a second run, or a second model, reuses it.
Bad input (a missing or damaged set, an unknown recipe, a source that yields no windows, a
checkpoint that is not an export) exits with a message naming the file and the fix, before any
process group is started where it can be checked up front.

Size: just over 400 lines: three commands over one shared core (resolving the data: saved
set or recipe + cache, the up-front checks, the process-group setup, the result files), which
is most of the module.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os

from brainomni.cli import command, evaluate_command
from brainomni.cli_common import add_renamed, parse_kv

log = logging.getLogger(__name__)

SETS_DIR = "sets"


# --------------------------------------------------------------------------- the data


def read_set(path: str):
    """``--set DIR``: a saved labelled set; ``SystemExit`` naming the folder and the fix."""
    from .windows import INDEX_NAME, load_labelled_set

    if not os.path.isfile(os.path.join(path, INDEX_NAME)):
        raise SystemExit(
            f"--set {path}: no {INDEX_NAME} there; give the folder save_labelled_set wrote "
            "(or `brainomni labelled-set`), or build one with --recipe NAME --source ROOT"
        )
    try:
        return load_labelled_set(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--set {path}: {exc}") from None


def _recipe(args):
    from .recipes import DEFAULT_RECIPES, get_recipe

    path = args.recipes or DEFAULT_RECIPES
    try:
        return get_recipe(args.recipe, path)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--recipe {args.recipe} ({path}): {exc}") from None


def set_cache_dir(work_dir: str, recipe, source: str, label_table: str | None) -> str:
    """Where the set of ``recipe`` over ``source`` is cached: ``work_dir/sets/<name>-<key>``;
    the key hashes the recipe, the cleaning config, the source and the label table (path and
    content), so a changed recipe or table builds a new set."""
    from ..signal.config import DEFAULT_CONFIG

    table = ""
    if label_table:
        with open(label_table, "rb") as fh:
            table = hashlib.sha256(fh.read()).hexdigest()
    blob = json.dumps(
        [recipe.hash, DEFAULT_CONFIG.hash, str(source), str(label_table or ""), table]
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in recipe.name)
    return os.path.join(work_dir, SETS_DIR, f"{safe}-{key}")


def _source(spec: list[str]):
    """``--source``: one BIDS/TUH root (a folder or URL), or recording files (a list)."""
    if len(spec) == 1 and not os.path.isfile(spec[0]):
        return spec[0]
    missing = [f for f in spec if not os.path.isfile(f)]
    if missing:
        raise SystemExit(
            f"--source: {missing[:3]} are not files; give one BIDS/TUH root, or recording files"
        )
    return list(spec)


def build_or_load(args):
    """The set of ``--recipe`` over ``--source`` (cached under ``--work-dir``); the folder it
    is saved in. ``SystemExit`` naming the ledger when no window survives."""
    from .windows import INDEX_NAME, build_labelled_set, load_labelled_set, save_labelled_set

    recipe = _recipe(args)
    if args.label_table and not os.path.isfile(args.label_table):
        raise SystemExit(f"--label-table {args.label_table}: no such file")
    source = _source(args.source)
    dest = set_cache_dir(args.work_dir, recipe, json.dumps(source), args.label_table)
    if not args.rebuild and os.path.isfile(os.path.join(dest, INDEX_NAME)):
        try:
            ls = load_labelled_set(dest)
            log.info("labelled set %s: reused from %s", recipe.name, dest)
            return ls, dest
        except (OSError, ValueError) as exc:  # damaged cache: build again
            log.warning("%s: %s; building it again", dest, exc)
    try:
        ls = build_labelled_set(
            recipe, source, work_dir=args.work_dir, label_table=args.label_table
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--recipe {recipe.name} --source {source}: {exc}") from None
    save_labelled_set(ls, dest)
    return ls, dest


def _check_usable(ls, where: str, folds: int) -> None:
    """A set fine-tuning can use: windows, two classes present, enough subjects."""
    if len(ls) == 0:
        raise SystemExit(
            f"{where}: no labelled window ({ls.meta.get('outcomes', {})}); the ledger "
            "meta['recordings'] in its labelled_set.json says why each recording was skipped"
        )
    present = sorted(set(ls.labels.tolist()))
    if len(present) < 2:
        raise SystemExit(
            f"{where}: windows of one class only ({ls.counts()}); check the recipe's label map "
            "(unmapped labels: meta['unmapped_labels'])"
        )
    from .folds import folds_for

    try:
        folds_for(ls, k=folds, seed=42)
    except ValueError as exc:
        raise SystemExit(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- arguments


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one of --set, or --recipe with --source)")
    g.add_argument(
        "--set",
        dest="set_dir",
        default=None,
        help="a saved labelled set: the folder holding labelled_set.json + windows.tar",
    )
    g.add_argument(
        "--recipe",
        default=None,
        help="downstream recipe (manifests/downstream.toml: AD65, TUAB, planted, ...)",
    )
    g.add_argument(
        "--source",
        nargs="+",
        default=None,
        help="BIDS root or TUH root of the recipe's dataset, or recording files",
    )
    g.add_argument(
        "--recipes", default=None, help="another recipes TOML (default manifests/downstream.toml)"
    )
    g.add_argument(
        "--label-table", default=None, help="TSV/CSV of labels (recipes with labels = 'table')"
    )
    g.add_argument(
        "--work-dir",
        default=None,
        help="recording stores and the cached set (default: DEST/work; an ingest run into it "
        "leaves stores that are reused)",
    )
    g.add_argument("--rebuild", action="store_true", help="build the cached set again")


def _resolve_data(args, out: str, folds: int | None):
    """The labelled set named by the data arguments (see :func:`_data_args`)."""
    if args.set_dir and (args.recipe or args.source):
        raise SystemExit("give either --set DIR or --recipe NAME --source ROOT, not both")
    if args.set_dir:
        ls, where = read_set(args.set_dir), args.set_dir
    elif args.recipe and args.source:
        args.work_dir = args.work_dir or os.path.join(out, "work")
        ls, dest = build_or_load(args)
        where = f"--source {' '.join(args.source)} (set saved in {dest}; --rebuild after fixing it)"
    else:
        raise SystemExit(
            "no data: give --set DIR (a saved labelled set) or --recipe NAME --source ROOT"
        )
    if folds is not None:
        _check_usable(ls, where, folds)
    return ls, where


def _common(p: argparse.ArgumentParser) -> None:
    from .protocols import RECIPES  # not .finetune: that imports torch for every CLI call

    _data_args(p)
    p.add_argument("--checkpoint", required=True, help="exported model folder (`brainomni export`)")
    add_renamed(
        p,
        "--dest",
        "--out",
        required=True,
        dest="out",
        help="run folder (units, results.json, results.md, plots)",
    )
    p.add_argument(
        "--protocol",
        default="paper-finetune",
        choices=sorted(RECIPES),
        help="fine-tuning protocol (LR grid, seeds, epochs, batch, optimiser)",
    )
    p.add_argument("--frozen", action="store_true", help="freeze the backbone (head only)")
    p.add_argument(
        "--sfreq",
        type=float,
        default=None,
        help="sampling rate of the windows in Hz (default: the set's meta['sfreq'], else 256)",
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "overrides",
        nargs="*",
        help="fine-tuning config overrides: epochs=10 lrs=[1e-5] folds=5 (default folds: the "
        "set's recipe, else the protocol's)",
    )


def _setup(args):
    from .finetune import _check_export, apply_overrides, get_recipe, setup_distributed

    cfg = get_recipe(args.protocol)
    sets = ["frozen=true"] if args.frozen else []
    given = list(args.overrides)
    try:
        cfg = apply_overrides(cfg, sets + given)
        explicit_folds = "folds" in parse_kv(given, "overrides")
    except ValueError as exc:
        raise SystemExit(f"overrides {given}: {exc}") from None
    # a bad --set or --source fails before any process group; a source is built by one
    # process (rank 0 of a launcher, the only one otherwise), the other ranks load its cache
    rank = int(os.environ.get("RANK", "0"))
    windows = None
    if args.set_dir or rank == 0:
        windows, where = _resolve_data(args, args.out, None)
        cfg = _folds_from_set(cfg, windows, explicit_folds)
        _check_usable(windows, where, cfg.folds)
    try:
        _check_export(args.checkpoint)
    except ValueError as exc:
        raise SystemExit(f"--checkpoint: {exc}") from None
    ctx = setup_distributed()
    if windows is None:
        ctx.barrier()  # rank 0 has built and saved the set
        windows, _ = _resolve_data(args, args.out, None)
        cfg = _folds_from_set(cfg, windows, explicit_folds)
    elif not args.set_dir:
        ctx.barrier()
    if args.sfreq is None:
        args.sfreq = float(windows.meta.get("sfreq", 256.0))
    return cfg, ctx, windows


def _folds_from_set(cfg, windows, explicit: bool):
    """The recipe's fold count (its split protocol, ``meta["folds"]``) unless ``folds=`` was
    given."""
    from dataclasses import replace

    folds = windows.meta.get("folds")
    if not explicit and isinstance(folds, int) and folds != cfg.folds:
        return replace(cfg, folds=folds)
    return cfg


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


# --------------------------------------------------------------------------- commands


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


def _conf_labelled_set(p: argparse.ArgumentParser) -> None:
    p.description = (
        "build a downstream recipe's labelled windows from a BIDS/TUH root and save them "
        "(labelled_set.json + windows.tar) for `brainomni finetune --set`"
    )
    p.add_argument("--recipe", required=True, help="downstream recipe (manifests/downstream.toml)")
    p.add_argument(
        "--source", nargs="+", required=True, help="BIDS root or TUH root, or recording files"
    )
    add_renamed(
        p,
        "--dest",
        "--out",
        required=True,
        dest="out",
        help="folder for labelled_set.json + windows.tar",
    )
    p.add_argument("--recipes", default=None, help="another recipes TOML")
    p.add_argument("--label-table", default=None, help="TSV/CSV of labels (labels = 'table')")
    p.add_argument("--work-dir", default=None, help="recording stores (default: DEST/work; reused)")


def _run_labelled_set(args: argparse.Namespace) -> int:
    """Build a recipe's labelled set and save it under ``--out`` (for ``--set``)."""
    from .windows import build_labelled_set, save_labelled_set

    recipe = _recipe(args)
    if args.label_table and not os.path.isfile(args.label_table):
        raise SystemExit(f"--label-table {args.label_table}: no such file")
    work = args.work_dir or os.path.join(args.out, "work")
    source = _source(args.source)
    try:
        ls = build_labelled_set(recipe, source, work_dir=work, label_table=args.label_table)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--recipe {recipe.name} --source {source}: {exc}") from None
    index = save_labelled_set(ls, args.out)
    summary = {
        "index": index,
        "windows": len(ls),
        "subjects": len(set(ls.subjects.tolist())),
        "classes": ls.counts(),
        "outcomes": ls.meta.get("outcomes", {}),
        "rejected": ls.meta.get("rejected", {}),
    }
    print(json.dumps(summary, sort_keys=True))
    return 0 if len(ls) else 1


evaluate_command(
    "downstream", "fine-tune + baselines under the same cross-subject folds; results.md"
)((_conf_downstream, _run_downstream))
command("finetune", "fine-tune an exported model on a labelled set under cross-subject folds")(
    (_conf_finetune, _run_finetune)
)
command(
    "labelled-set",
    "build a downstream recipe's labelled windows from a BIDS/TUH root and save them",
)((_conf_labelled_set, _run_labelled_set))
