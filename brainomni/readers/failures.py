"""How a reader's exceptions become outcomes: the reason and error class of a file a reader
could not open (missing optional package, missing companion, malformed content), and guards
that turn damage met later (the probe of the first/last sample, every block read while
cleaning) into :class:`~brainomni.errors.RecordingFailed` naming the file. Used by
:mod:`brainomni.readers.open`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from brainomni.errors import RecordingFailed, RecordingOutcome
from brainomni.readers.formats import GENERIC, Format

if TYPE_CHECKING:  # pragma: no cover
    from mne.io import BaseRaw

# Exceptions that are programming errors in our code; raised by a third-party reader on a
# damaged file they are a data problem, recorded as "ReadError.Malformed" (the original class
# is named in the reason), never as an outcome class of their own.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, KeyError, IndexError, NameError)


def _missing_package(exc: BaseException, spec: Format) -> str | None:
    """The pip line for an optional package the reader lacked, if that is what ``exc`` is."""
    text = str(exc)
    markers = ("could not be imported", "is needed", "is required", "No module named")
    if isinstance(exc, ImportError) or any(m in text for m in markers):
        name = getattr(exc, "name", None) or ""
        for module, hint in spec.optional_packages.items():
            if module == name or module in text:
                return hint
        if isinstance(exc, ImportError):
            return f"pip install {name or '<the missing module>'}"
    return None


_EXC_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (?P<msg>.+)$")


def exception_message(exc: BaseException) -> str:
    """The first line of the message ``exc`` carries, not a traceback line.

    Some MNE readers (``read_raw_cnt``) re-raise with the inner traceback as the message
    (``File ".../_utils.py", line 154, in ...`` first): the ``SomeError: message`` line is
    taken from it, else the message of the chained exception."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith(('File "', "Traceback")):
        for ln in lines:
            if m := _EXC_LINE_RE.match(ln):
                return m["msg"]
        inner = exc.__cause__ or exc.__context__
        if inner is not None and inner is not exc:
            return exception_message(inner)
    return lines[0] if lines else ""


def _reader_failure(exc: BaseException, spec: Format, path: str) -> RecordingFailed:
    hint = _missing_package(exc, spec)
    if hint is not None:
        return RecordingFailed(
            f"{path}: reading {spec.description} needs an optional package: {hint} ({exc})",
            error_class="MissingDependency",
        )
    if isinstance(exc, FileNotFoundError):
        missing = exc.filename or str(exc)
        return RecordingFailed(
            f"{path}: a file the {spec.key} reader needs is missing: {missing}; copy the "
            "recording with all its companion files",
            error_class="MissingCompanion",
        )
    detail = exception_message(exc)
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return RecordingFailed(
            f"{path}: cannot read as {spec.description}: the reader failed on this file's "
            f"content ({type(exc).__name__}: {detail[:300]}); the file is corrupt, truncated "
            "or not this format (pass --format KEY if it is another one)",
            error_class="ReadError.Malformed",
        )
    if spec.key == GENERIC and isinstance(exc, ValueError) and "Unsupported" in str(exc):
        return RecordingFailed(
            f"{path}: not a format MNE can read ({detail})", error_class="UnsupportedFormat"
        )
    return RecordingFailed(
        f"{path}: cannot read as {spec.description}: {type(exc).__name__}: {detail[:300]} "
        "(corrupt, truncated or not this format)",
        error_class=f"ReadError.{type(exc).__name__}",
    )


def _probe(raw: BaseRaw, path: str) -> None:
    """Read the first and last sample so damage inside the data shows up now."""
    n = int(raw.n_times)
    try:
        raw.get_data(start=0, stop=1)
        raw.get_data(start=n - 1, stop=n)
    except RecordingOutcome:
        raise
    except Exception as exc:  # noqa: BLE001 - reader internals on damaged data
        name = "Malformed" if isinstance(exc, _PROGRAMMING_ERRORS) else type(exc).__name__
        raise RecordingFailed(
            f"{path}: header reads but the samples do not ({type(exc).__name__}: "
            f"{exception_message(exc)[:200]}); the data part is truncated or corrupt",
            error_class=f"ReadError.{name}",
        ) from exc


_GUARDED: dict[type, type] = {}


def _guard_reads(raw: BaseRaw, spec: Format, path: str) -> None:
    """Make every later block read of ``raw`` turn a reader exception into an outcome.

    Damage past the probed samples (a KIT file cut in half reads its first and last sample but
    fails on a whole block with ``ValueError: cannot reshape``) surfaces only while cleaning.
    MNE reads through ``type(raw)._read_segment_file`` (its ``_ReadSegmentFileProtector`` calls
    the class attribute), so the raw gets a subclass whose reads map any exception to
    :class:`RecordingFailed` naming the file; the data and every isinstance check are
    unchanged (``_brainomni_reader_class`` names the reader's own class). Preloaded raws never
    call it.
    """
    cls = type(raw)
    if cls not in _GUARDED:
        base_read = cls._read_segment_file

        def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
            try:
                return base_read(self, data, idx, fi, start, stop, cals, mult)
            except RecordingOutcome:
                raise
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - reader internals on damaged data
                fname = getattr(self, "_filenames", [path])[fi] if fi is not None else path
                name = "Malformed" if isinstance(exc, _PROGRAMMING_ERRORS) else type(exc).__name__
                raise RecordingFailed(
                    f"{fname}: samples [{start}, {stop}) do not read ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); the data part is truncated or corrupt",
                    error_class=f"ReadError.{name}",
                ) from exc

        attrs = {"_read_segment_file": _read_segment_file, "_brainomni_reader_class": cls}
        _GUARDED[cls] = type(cls.__name__, (cls,), attrs)
    raw.__class__ = _GUARDED[cls]
