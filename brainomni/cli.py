"""The ``brainomni`` command line.

Subcommands: ``inspect`` (outcome, sensor table and QC of one recording, nothing written),
``preprocess`` (clean one recording into a Zarr v3 store). Run ``brainomni CMD --help``.
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

from .entry import add_storage_retry_argument, apply_storage_retry, setup_logging, storage_failure

_COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {}


def command(name: str):
    """Register ``(configure(parser), run(args) -> exit code)`` as subcommand ``name``."""

    def deco(pair):
        _COMMANDS[name] = pair
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
        conf(sub.add_parser(name, help=h, description=h))


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
    p.add_argument(
        "--anon",
        action="store_true",
        help="anonymous access to a public bucket (e.g. s3://openneuro.org)",
    )
    p.add_argument(
        "--endpoint-url", default=None, help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)"
    )
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
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _storage_options(args) -> dict | None:
    so: dict = {}
    if args.anon:
        so["anon"] = True
    if args.endpoint_url:
        so["client_kwargs"] = {"endpoint_url": args.endpoint_url}
    return so or None


def _run_one(args, out: str | None):
    from .preprocess import preprocess_recording
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
            storage_options=_storage_options(args),
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
    from .storage import describe_error, redact

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
    p.add_argument(
        "--out", required=True, help="output store (STORE.zarr), local path or fsspec URL"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _run_preprocess(args) -> int:
    res = _run_one(args, args.out)
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
    else:
        _print_human(res, wrote=True)
    return 0 if res.outcome != "failed" else 2


command("inspect")((_conf_inspect, _run_inspect))
command("preprocess")((_conf_preprocess, _run_preprocess))
command("evaluate")((_conf_evaluate, _run_evaluate))

_HELP = {
    "inspect": "show outcome, sensor table, dropped channels and QC of one recording (writes nothing)",
    "preprocess": "clean one recording into a per-recording Zarr v3 store",
    "pretrain": "pretrain the tokenizer or BrainOmni with DeepSpeed ZeRO (torchrun for many ranks)",
    "export": "export a checkpoint as one fp32 safetensors file + config.json",
    "tokenize": "tokenize 30-s shards once into token shards with their own manifest",
    "finetune": "fine-tune an exported model on a labelled set under cross-subject folds",
    "evaluate": "evaluate a model: 'downstream', 'recon' (brainomni evaluate EVALUATION --help)",
    "embed": "tokens and features of one recording (any device) under an exported model",
    "labelled-set": "build a downstream recipe's labelled windows from a BIDS/TUH root and save them",
}


def _load_plugins() -> None:
    """Subcommands defined by other modules register themselves on import."""
    import importlib

    for mod in (
        "brainomni.train.cli",
        "brainomni.tokenize_cli",
        "brainomni.evaluation.cli",
        "brainomni.evaluation.recon_cli",
    ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and not mod.startswith(exc.name) and exc.name not in mod:
                raise


def main(argv: Sequence[str] | None = None) -> int:
    _load_plugins()
    parser = argparse.ArgumentParser(
        prog="brainomni",
        description="BrainOmni corpus and pretraining tools. Run 'brainomni CMD --help' for a command.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="CMD")
    for name, (conf, _) in _COMMANDS.items():
        sp = sub.add_parser(name, help=_HELP.get(name, ""), description=_HELP.get(name))
        conf(sp)
        add_storage_retry_argument(sp)
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING)
    apply_storage_retry(args.storage_retry_s)
    try:
        return _COMMANDS[args.cmd][1](args)
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
