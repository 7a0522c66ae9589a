"""The one command-line vocabulary of ``brainomni`` and ``pipelines/*.py``.

Every command builds its options from these helpers, so the same word means the same thing
everywhere:

* ``--source`` what a command reads (recordings, a corpus, a pack, a shard manifest) and
  ``--dest`` where it writes (:func:`add_source_dest`);
* ``--storage-option KEY=VALUE``, ``--anon``, ``--endpoint-url`` for the ``--source`` URLs and
  ``--dest-option KEY=VALUE`` for ``--dest`` (:func:`add_storage_args`,
  :func:`storage_options`); credentials never come from options;
* ``--executor local|ray`` (``serial`` is an alias of ``local``), ``--address``,
  ``--num-cpus`` (:func:`add_ray_args`);
* ``--set KEY=VALUE`` config overrides (:func:`add_overrides`), every ``KEY=VALUE`` parsed by
  :func:`parse_kv` with one typing rule (:func:`parse_value`);
* ``-v`` / ``-q`` (:func:`add_verbosity`) and one logging setup (:func:`setup_logging`) with
  credentials redacted at every level.

Renamed options keep working for one more release and say so on stderr
(:func:`add_renamed`): ``--store``, ``--shards`` and ``--manifest`` (tokenize) became
``--source``; ``--out`` became ``--dest``; ``--config`` became ``--set``; ``--log-level``
became ``-v`` / ``-q``.

Size: a little over 400 lines because it *is* the one vocabulary: the one ``KEY=VALUE``
parser, the option helpers every command shares, renamed options and the one logging setup
sit in one file so that no command grows its own variant (tests/test_cli.py greps for that).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .io.redact import redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that print request headers, signed URLs or credential responses at DEBUG.
SENSITIVE_LOGGERS = (
    "botocore",
    "boto3",
    "aiobotocore",
    "s3fs",
    "fsspec",
    "urllib3",
    "aiohttp",
    "requests",
)
EXECUTORS = ("local", "ray", "serial")  # serial: an alias of local


class UsageError(ValueError):
    """Bad command-line input; ``brainomni`` prints it as a usage error (exit code 2)."""


# --------------------------------------------------------------------------- key=value


def parse_value(text: str) -> Any:
    """The one typing rule of every ``KEY=VALUE``: JSON when the text is JSON (``3``,
    ``1e-4``, ``true``, ``null``, ``[1, 2]``, ``{"a": 1}``, ``"quoted"``), then ``true`` /
    ``false`` / ``none`` in any case, else the text itself (``s3://b/x``, ``float32``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def parse_kv(
    items: Iterable[str] | None, what: str = "KEY=VALUE", *, raw: Sequence[str] = ()
) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: value}`` in order (a repeated key: the last wins), values
    typed by :func:`parse_value` except the keys in ``raw``, kept as text (a version
    ``1.10`` stays ``"1.10"``). :class:`UsageError` naming ``what`` for an item without
    ``=`` or with an empty key."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{what}: expected key=value, got {item!r}")
        out[key] = text if key in raw else parse_value(text)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_overrides(cls: type, overrides: dict[str, Any], what: str = "--set") -> dict[str, Any]:
    """``overrides`` of the dataclass ``cls`` checked before they reach it: every key a field,
    every value of its default's type (an int where a float is expected becomes a float; a
    list where a tuple is expected is left to ``cls``; a field whose default is ``None``
    takes ``none`` or a number when it is annotated as one). :class:`UsageError` naming the
    key and the fix, so that bad input never reaches ``cls`` as a wrong type."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in overrides.items():
        f = known.get(key)
        if f is None:
            raise UsageError(
                f"{what} {key}=...: {cls.__name__} has no such field; one of {sorted(known)}"
            )
        default = f.default
        if default is dataclasses.MISSING:  # a nested config (default_factory)
            raise UsageError(f"{what} {key}=...: not settable from the command line")
        if default is None:
            numeric = any(t in str(f.type) for t in ("float", "int"))
            ok = value is None or not numeric or _is_number(value)
            want_name = f"{f.type}"
        else:
            want = type(default)
            want_name = want.__name__
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if want is float and _is_number(value):
                value, ok = float(value), True
            if want is tuple and isinstance(value, list):  # numbers where the default has them
                ok = not (default and all(map(_is_number, default))) or all(map(_is_number, value))
        if not ok:
            raise UsageError(f"{what} {key}={value!r}: expected {want_name} (default {default!r})")
        overrides[key] = value
    return overrides


# --------------------------------------------------------------------------- renamed options


class _Renamed(argparse.Action):
    """An old option name that still works: stores like the new one and says so on stderr."""

    def __init__(self, option_strings, dest, new: str, kind: str, **kw):
        self.new, self.kind = new, kind
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: {option_string} is deprecated; use {self.new}",
            file=sys.stderr,
        )
        if self.kind == "append":
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])
        elif self.kind == "extend":
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *values])
        elif self.kind == "store_true":
            setattr(namespace, self.dest, True)
        else:
            setattr(namespace, self.dest, values)


def add_renamed(
    p: argparse.ArgumentParser, new: str, *old: str, required: bool = False, **kw: Any
) -> argparse.Action:
    """``p.add_argument(new, **kw)`` plus hidden ``old`` names that set the same value with a
    deprecation line. ``required``: one of them must be given (argparse names ``new``)."""
    group: Any = p.add_mutually_exclusive_group(required=True) if required and old else p
    if required and not old:
        kw["required"] = True
    action = group.add_argument(new, **kw)
    kind = kw.get("action", "store")
    for name in old:
        extra: dict[str, Any] = {"nargs": 0} if kind == "store_true" else {}
        if kind in ("store", "append", "extend"):
            extra = {"nargs": action.nargs, "type": action.type, "metavar": action.metavar}
        group.add_argument(
            name,
            dest=action.dest,
            action=_Renamed,
            new=new,
            kind=kind,
            help=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            **extra,
        )
    return action


# --------------------------------------------------------------------------- vocabulary


def add_source_dest(
    p: argparse.ArgumentParser,
    *,
    source: str | None = None,
    dest: str | None = None,
    source_old: Sequence[str] = (),
    dest_old: Sequence[str] = (),
    source_dest: str = "source",
    dest_dest: str = "dest",
    dest_default: str | None = None,
) -> None:
    """``--source`` (help ``source``; required) and ``--dest`` (help ``dest``; required unless
    ``dest_default``), each with its renamed old names."""
    if source is not None:
        add_renamed(p, "--source", *source_old, required=True, dest=source_dest, help=source)
    if dest is not None:
        add_renamed(
            p,
            "--dest",
            *dest_old,
            required=dest_default is None,
            dest=dest_dest,
            default=dest_default,
            help=dest,
        )


def add_storage_args(p: argparse.ArgumentParser, *, dest: bool = True) -> None:
    """``--storage-option``, ``--anon``, ``--endpoint-url`` (the ``--source`` URLs) and, with
    ``dest``, ``--dest-option`` (the ``--dest`` URL). See :func:`storage_options`."""
    g = p.add_argument_group("object storage (credentials come from the environment)")
    g.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for the source URLs (profile, requester_pays...; no secrets)",
    )
    g.add_argument(
        "--anon", action="store_true", help="read the source anonymously (public buckets)"
    )
    g.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint of the source (default: AWS_ENDPOINT_URL)",
    )
    if dest:
        g.add_argument(
            "--dest-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fsspec option for --dest (e.g. endpoint_url=http://minio:9000)",
        )


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The fsspec options of the source URLs from :func:`add_storage_args`; ``None`` when
    none is given (the filesystem's defaults and the environment apply)."""
    so = parse_kv(getattr(args, "storage_option", None), "--storage-option")
    if getattr(args, "anon", False):
        so["anon"] = True
    url = getattr(args, "endpoint_url", None)
    if url:
        so["client_kwargs"] = {**so.get("client_kwargs", {}), "endpoint_url": url}
    return so or None


def dest_storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The fsspec options of ``--dest`` (``--dest-option``); ``None`` when none is given."""
    return parse_kv(getattr(args, "dest_option", None), "--dest-option") or None


def add_ray_args(p: argparse.ArgumentParser, *, default: str = "ray") -> None:
    """``--executor local|ray``, ``--address``, ``--num-cpus``."""
    g = p.add_argument_group("execution")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=default,
        help=f"ray: one Ray task per unit; local (alias serial): everything in this process "
        f"(default {default})",
    )
    g.add_argument(
        "--address",
        default=None,
        help="Ray address (auto, ray://head:10001, 10.0.0.1:6379); default: $RAY_ADDRESS (set "
        "under `ray job submit`), else a local Ray",
    )
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")


def executor_name(args: argparse.Namespace) -> str:
    """``local`` or ``ray`` (``serial`` is ``local``)."""
    return "local" if args.executor in ("local", "serial") else "ray"


def add_overrides(p: argparse.ArgumentParser, what: str, *old: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.sets``; ``old`` names take several pairs
    per flag (as ``--config`` of ``pipelines/ingest.py`` did)."""
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what} override (repeatable; values typed as JSON, else text)",
    )
    for name in old:
        p.add_argument(
            name,
            dest="sets",
            action=_Renamed,
            new="--set",
            kind="extend",
            nargs="+",
            help=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
        )


class _LogLevel(argparse.Action):
    """The old ``--log-level NAME`` of ``pipelines/ingest.py``: becomes -v / -q."""

    _MAP = {"DEBUG": (1, 0), "INFO": (0, 0), "WARNING": (0, 1), "ERROR": (0, 2)}

    def __call__(self, parser, namespace, values, option_string=None):
        name = str(values).upper()
        if name not in self._MAP:
            parser.error(f"--log-level {values!r}: use -v (DEBUG) or -q (WARNING), -qq (ERROR)")
        print(f"{parser.prog}: --log-level is deprecated; use -v or -q", file=sys.stderr)
        namespace.verbose, namespace.quiet = self._MAP[name]


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``-v`` (debug) and ``-q`` (warnings only; ``-qq`` errors only); ``--log-level`` is the
    deprecated old spelling."""
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.add_argument(
        "-q", "--quiet", action="count", default=0, help="warnings only (-qq: errors only)"
    )
    p.add_argument("--log-level", action=_LogLevel, help=argparse.SUPPRESS)


# --------------------------------------------------------------------------- logging


class RedactingFilter(logging.Filter):
    """Rewrites every record through :func:`brainomni.io.redact.redact` (message, traceback and
    stack text); never drops a record. Safe to attach to any logger or handler, repeatedly."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_brainomni_redacted", False):
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self._formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._brainomni_redacted = True
        return True


_FILTER = RedactingFilter()
_factory_installed = False


def install_redaction() -> None:
    """Attach the redacting filter to the root handlers, to the loggers of the storage
    libraries (:data:`SENSITIVE_LOGGERS`) and their handlers, and redact records as they are
    created (which also covers handlers added later, e.g. by Ray or pytest). Idempotent."""
    global _factory_installed
    names = [
        n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in SENSITIVE_LOGGERS
    ]
    loggers = [logging.getLogger(n) for n in (*SENSITIVE_LOGGERS, *names)]
    for lg in (logging.getLogger(), *loggers):
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
        for h in lg.handlers:
            if _FILTER not in h.filters:
                h.addFilter(_FILTER)
    if not _factory_installed:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def log_level(verbose: int = 0, quiet: int = 0, default: int = logging.INFO) -> int:
    """The level of ``-v`` / ``-q`` counts: ``-v`` DEBUG, ``-q`` WARNING, ``-qq`` ERROR, else
    ``default``; a process of a multi-rank launch whose ``RANK`` is not 0 logs WARNING and
    above unless ``-v``."""
    if verbose:
        return logging.DEBUG
    if quiet:
        return logging.WARNING if quiet == 1 else logging.ERROR
    if os.environ.get("RANK", "0") not in ("", "0"):
        return max(default, logging.WARNING)
    return default


def setup_logging(level: int | str = logging.INFO) -> None:
    """The one logging setup of every entry point: a stderr handler on the root logger (as
    :func:`logging.basicConfig`: none is added when the root logger already has handlers,
    e.g. under pytest or Ray), the ``brainomni`` loggers at ``level``, and credentials
    redacted at every level, DEBUG included, on every handler (:func:`install_redaction`).
    ``level``: a number or a name (``"DEBUG"``, ``"INFO"``...)."""
    if isinstance(level, str):
        name = level.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise UsageError(f"log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
        level = logging.getLevelName(name)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("brainomni").setLevel(level)
    install_redaction()
