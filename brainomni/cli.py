"""The ``brainomni`` command line: one program, one option vocabulary
(:mod:`brainomni.cli_common`), one logging setup.

Commands register themselves with :func:`command` (``inspect`` and ``preprocess`` here; the
corpus stages ``ingest``, ``pack``, ``publish``, ``verify``, ``diff``, ``tokenize`` in
:mod:`brainomni.cli_corpus`; ``pretrain`` and ``export`` in :mod:`brainomni.train.cli`; the
evaluation commands in :mod:`brainomni.evaluation`). ``pipelines/*.py`` are thin wrappers
that run one of them (:func:`main` with ``commands``). Run ``brainomni CMD --help``.
Object-storage errors end with one line and exit code 3 (unreachable) or 4 (access refused),
see :mod:`brainomni.entry`; with ``--json`` the command always prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Sequence

from .cli_common import (
    UsageError,
    add_source_dest,
    add_storage_args,
    add_verbosity,
    log_level,
    setup_logging,
    storage_options,
)
from .entry import add_storage_retry_argument, apply_storage_retry
from .io.retry import storage_failure

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Configure, Run]] = {}
_HELP: dict[str, str] = {}
_LEVEL: dict[str, int] = {}
# the order of ``brainomni --help``: the corpus stages, training, one recording, evaluation
ORDER = (
    "ingest",
    "pack",
    "publish",
    "verify",
    "diff",
    "tokenize",
    "pretrain",
    "export",
    "inspect",
    "preprocess",
    "embed",
    "labelled-set",
    "finetune",
    "evaluate",
)


def command(name: str, help: str = "", *, log_level: int = logging.INFO):
    """Register ``(configure(parser), run(args) -> exit code)`` as subcommand ``name`` with
    its one-line ``help`` and its default log level (``-v`` / ``-q`` change it). Every
    subcommand gets ``-v`` / ``-q`` and ``--storage-retry-s`` on top of what ``configure``
    adds."""

    def deco(pair):
        _COMMANDS[name] = pair
        if help:
            _HELP[name] = help
        _LEVEL[name] = log_level
        return pair

    return deco


# ``brainomni evaluate NAME``: evaluations register here (``evaluate_command``), each as
# ``(configure(parser), run(args) -> exit code)`` like a subcommand; the group is built from
# this dict, so a new evaluation needs no edit here.
_EVALUATE: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}
_EVALUATE_HELP: dict[str, str] = {}


def evaluate_command(name: str, help: str = ""):
    """Register ``(configure(parser), run(args) -> exit code)`` as ``brainomni evaluate NAME``."""

    def deco(pair):
        _EVALUATE[name] = pair
        _EVALUATE_HELP[name] = help
        return pair

    return deco


def _conf_evaluate(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION")
    for name, (conf, _) in sorted(_EVALUATE.items()):
        h = _EVALUATE_HELP.get(name, "")
        _finish(conf, sub.add_parser(name, help=h, description=h))


def _run_evaluate(args: argparse.Namespace) -> int:
    return _EVALUATE[args.evaluation][1](args)


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="recording: local path or fsspec URL (s3://...); folders for CTF .ds / EGI .mff",
    )
    p.add_argument(
        "--format", dest="fmt", default=None, help="reader key (default: detected from the name)"
    )
    p.add_argument(
        "--line-freq",
        type=float,
        default=None,
        help="line frequency in Hz (default: from the file; 50 and 60 when unknown)",
    )
    p.add_argument("--bads", default="", help="comma-separated channel names to treat as bad")
    add_storage_args(p, dest=False)
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where remote recordings are staged (default: system temp)",
    )
    p.add_argument(
        "--no-detect-bads",
        action="store_true",
        help="only use bad channels marked in the file or given",
    )


def _run_one(args, out: str | None):
    from .clean import preprocess_recording
    from .records import RecordingRef
    from .signal.config import CleanConfig

    cfg = CleanConfig(line_freq=args.line_freq, detect_bads=not args.no_detect_bads)
    bads = tuple(b.strip() for b in args.bads.split(",") if b.strip())
    ref = RecordingRef(uri=args.source, format=args.fmt)
    # Some readers' dependencies print to stdout (mffpy); keep stdout for our output.
    with contextlib.redirect_stdout(sys.stderr):
        return preprocess_recording(
            ref,
            out=out,
            config=cfg,
            storage_options=storage_options(args),
            cache_dir=args.cache_dir,
            bads=bads,
            progress=sys.stderr.isatty(),
        )


def _print_human(res, *, wrote: bool) -> None:
    d = res.to_json()
    print(f"{d['uri']}")
    print(
        f"  outcome   {d['outcome']}"
        + (f" ({d['error_class']}): {d['reason']}" if d["reason"] else "")
    )
    if d["sfreq"]:
        print(
            f"  input     {d['format']} via {d['reader']}, {d['sfreq']:g} Hz, {d['duration_s']:.2f} s"
        )
    if d["summary"]:
        s = ", ".join(f"{k} {v}" for k, v in d["summary"].items() if v)
        srcs: dict[str, int] = {}
        for c in d["channels"]:
            srcs[c["pos_source"]] = srcs.get(c["pos_source"], 0) + 1
        print(f"  channels  {s}  (positions: {', '.join(f'{k} {v}' for k, v in srcs.items())})")
    if d["dropped"]:
        by: dict[str, list[str]] = {}
        for x in d["dropped"]:
            by.setdefault(x["reason"], []).append(x["name"])
        print(f"  dropped   {len(d['dropped'])}")
        for reason, names in by.items():
            more = f" ... (+{len(names) - 6})" if len(names) > 6 else ""
            print(f"    - {reason}: {', '.join(names[:6])}{more}")
    qc = d["qc"]
    if qc:
        print(
            f"  output    {qc['output_duration_s']:.2f} s at {qc['sfreq_out']:g} Hz; notch {qc['notch_freqs']} "
            f"(line {qc['line_freq']} Hz, {qc['line_freq_source']})"
        )
        if qc["bad_channels"]:
            print(f"  bad       {len(qc['bad_channels'])} interpolated")
            for b in qc["bad_channels"]:
                print(f"    - {b['name']}: {'; '.join(b['reasons'])}")
        else:
            print("  bad       none")
        rms = ", ".join(f"{k} {v:.3g}" for k, v in qc["rms"].items())
        print(f"  rms       {rms}  (SI units)")
        print(
            f"  flat      {qc['flat_seconds_total']:.0f} channel-s; clipped fraction {qc['clipped_fraction']:.4f}"
        )
    if wrote and res.store:
        print(f"  store     {res.store}")
    print(f"  time      {res.timings.get('total_s', 0):.2f} s")


def _conf_inspect(p: argparse.ArgumentParser) -> None:
    _add_source_args(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (outcome, reason, sfreq, duration_s, channels, dropped, qc)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="also write a QC figure (spectra per type, bad channels, channel RMS)",
    )


def _error_json(args, exc: BaseException, line: str | None) -> dict:
    """The JSON that ``--json`` prints when the command could not run to an outcome."""
    from .io.redact import describe_error, redact

    return {
        "uri": redact(getattr(args, "source", "") or ""),
        "outcome": "error",
        "error": {
            "class": type(exc).__name__,
            "kind": "storage" if line else "internal",
            "message": line or describe_error(exc),
        },
    }


def _run_inspect(args) -> int:
    res = _run_one(args, None)
    if args.plot and res.outcome == "ok":
        from .qc_plot import plot_qc

        plot_qc(res.to_json(), args.plot)
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        _print_human(res, wrote=False)
    return 0 if res.outcome != "failed" else 2


def _conf_preprocess(p: argparse.ArgumentParser) -> None:
    _add_source_args(p)
    add_source_dest(
        p,
        dest="output store (STORE.zarr), local path or fsspec URL",
        dest_old=("--out",),
        dest_dest="out",
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _run_preprocess(args) -> int:
    res = _run_one(args, args.out)
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        _print_human(res, wrote=True)
    return 0 if res.outcome != "failed" else 2


command(
    "inspect",
    "show outcome, sensor table, dropped channels and QC of one recording (writes nothing)",
    log_level=logging.WARNING,
)((_conf_inspect, _run_inspect))
command(
    "preprocess",
    "clean one recording into a per-recording Zarr v3 store",
    log_level=logging.WARNING,
)((_conf_preprocess, _run_preprocess))
command(
    "evaluate", "evaluate a model: 'downstream', 'recon' (brainomni evaluate EVALUATION --help)"
)((_conf_evaluate, _run_evaluate))


def _load_plugins() -> None:
    """Subcommands defined by other modules register themselves on import."""
    import importlib

    for mod in (
        "brainomni.cli_corpus",
        "brainomni.train.cli",
        "brainomni.evaluation.cli",
        "brainomni.evaluation.recon_cli",
    ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and not mod.startswith(exc.name) and exc.name not in mod:
                raise


def _finish(conf: Configure, p: argparse.ArgumentParser) -> None:
    """A leaf command's parser: its own options, then what every command has."""
    conf(p)
    if not p._subparsers:  # a group (evaluate) adds them to its leaves
        add_verbosity(p)
        add_storage_retry_argument(p)


def build_parser(
    prog: str = "brainomni", commands: str | Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """The parser of ``brainomni`` (``commands``: a subset of the subcommands, or one
    subcommand's name for a parser of that command alone, as ``pipelines/*.py`` use)."""
    _load_plugins()
    if isinstance(commands, str):
        parser = argparse.ArgumentParser(prog=prog, description=_HELP.get(commands))
        _finish(_COMMANDS[commands][0], parser)
        parser.set_defaults(cmd=commands)
        return parser
    parser = argparse.ArgumentParser(
        prog=prog,
        description="BrainOmni corpus and pretraining tools. Run 'brainomni CMD --help' for a command.",
    )
    # also before the command (pipelines/publish.py took it there)
    parser.add_argument(
        "--storage-retry-s", dest="storage_retry_s_top", type=float, help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="CMD")
    order = {n: i for i, n in enumerate(ORDER)}
    for name, (conf, _) in sorted(_COMMANDS.items(), key=lambda kv: order.get(kv[0], 99)):
        if commands is None or name in commands:
            h = _HELP.get(name, "")
            _finish(conf, sub.add_parser(name, help=h, description=h))
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "brainomni",
    commands: str | Sequence[str] | None = None,
) -> int:
    """Run ``brainomni`` (or, with ``commands``, the entry point ``prog`` wrapping some of
    its subcommands); the exit code."""
    parser = build_parser(prog, commands)
    args = parser.parse_args(argv)
    try:
        setup_logging(log_level(args.verbose, args.quiet, _LEVEL.get(args.cmd, logging.INFO)))
        retry = args.storage_retry_s
        apply_storage_retry(getattr(args, "storage_retry_s_top", None) if retry is None else retry)
        return _COMMANDS[args.cmd][1](args)
    except UsageError as exc:
        where = parser.prog if isinstance(commands, str) else f"{parser.prog} {args.cmd}"
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        found = storage_failure(exc, endpoint=getattr(args, "endpoint_url", None))
        if getattr(args, "json", False) is True:  # --json always prints JSON
            print(json.dumps(_error_json(args, exc, found[1] if found else None), indent=2))
        if found is None:
            raise
        print(found[1], file=sys.stderr)
        return found[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
