"""Open one recording from a local path or any fsspec URL, lazily, with every read problem
turned into an outcome (:class:`~brainomni.errors.RecordingFailed` or
:class:`~brainomni.errors.SkipRecording`).

Local paths are read in place. Any URL with a scheme (``s3://``, ``memory://``,
``file://``...) is staged, together with its companion files (or the whole folder for folder
formats), into a temporary folder that is removed when the ``with`` block ends.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brainomni.errors import RecordingFailed, RecordingOutcome, SkipRecording
from brainomni.readers import checks
from brainomni.readers.formats import GENERIC, Format, detect_format, get_format, safe_join

if TYPE_CHECKING:  # pragma: no cover
    from fsspec import AbstractFileSystem
    from mne.io import BaseRaw

logger = logging.getLogger(__name__)

_EDF_BYTES = {"edf": 2, "bdf": 3}
# Exceptions that are programming errors in our code; raised by a third-party reader on a
# damaged file they are a data problem, recorded as "ReadError.Malformed" (the original class
# is named in the reason), never as an outcome class of their own.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, KeyError, IndexError, NameError)

# BIDS datatypes and entities that hold no scalp EEG or MEG (intracranial EEG, fNIRS, eye
# tracking, motion, physiology, behaviour): such recordings are skipped, not read.
_NOT_EEG_MEG = (
    (re.compile(r"(?:^|/)(?P<what>ieeg)/"), "BIDS datatype {} (intracranial EEG: sEEG/ECoG)"),
    (re.compile(r"_(?P<what>ieeg)\.[^/]*$"), "BIDS suffix _{} (intracranial EEG: sEEG/ECoG)"),
    (re.compile(r"_acq-(?P<what>ecog|seeg|ieeg|dbs)_", re.I), "acquisition {} (intracranial)"),
    (re.compile(r"(?:^|/)(?P<what>nirs)/|_nirs\.[^/]*$"), "BIDS fNIRS recording"),
    (re.compile(r"(?:^|/)(?P<what>eyetrack|motion|beh)/"), "BIDS datatype {} (no EEG/MEG)"),
    (re.compile(r"_(?P<what>physio|eyetrack|motion)\.[^/]*$"), "BIDS {} recording (no EEG/MEG)"),
)


@dataclass(frozen=True, slots=True)
class OpenedRaw:
    """An opened recording. ``raw`` is an MNE Raw, not preloaded unless ``preload_reason``
    says why it had to be; ``reader`` is the ``mne.io`` function used; ``local_path`` is the
    file (or folder) read; ``staged`` is True when it is a temporary copy of a remote URL."""

    raw: BaseRaw
    fmt: str
    reader: str
    local_path: str
    staged: bool
    preload_reason: str | None = None

    @property
    def preloaded(self) -> bool:
        return self.preload_reason is not None


@dataclass(frozen=True, slots=True)
class RawSummary:
    """Size of a recording: ``sfreq`` in Hz, ``n_times`` samples, ``duration_s`` seconds."""

    sfreq: float
    n_times: int
    duration_s: float
    n_channels: int


def describe_raw(raw: BaseRaw) -> RawSummary:
    """Sampling rate (Hz), sample count, duration (s) and channel count of ``raw``."""
    sfreq = float(raw.info["sfreq"])
    n_times = int(raw.n_times)
    return RawSummary(sfreq, n_times, n_times / sfreq if sfreq > 0 else 0.0, len(raw.ch_names))


def recording_line_freq(raw: BaseRaw) -> float | None:
    """The power-line frequency in Hz when the file records it (``info['line_freq']``, set by
    MNE only from the file itself, e.g. FIF), else ``None``. Never a guess."""
    value = raw.info.get("line_freq")
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 0.0 < value < 1e4 else None


def _is_url(uri: str) -> bool:
    return "://" in uri


def not_eeg_meg_reason(uri: str, spec: Format | None = None) -> str | None:
    """Why ``uri`` holds no EEG/MEG and is skipped unread (from its format or its BIDS path:
    datatype ``ieeg``/``nirs``/``eyetrack``..., ``acq-ecog``/``acq-seeg``), else ``None``."""
    if spec is not None and spec.skip_reason:
        return spec.skip_reason
    path = uri.replace("\\", "/")
    for pattern, reason in _NOT_EEG_MEG:
        m = pattern.search(path)
        if m:
            return reason.format(m.group("what"))
    return None


# --------------------------------------------------------------------------- checks


def _check_local(spec: Format, path: str) -> None:
    """Existence, emptiness, folder members, required companions, EDF/BDF header."""
    import fsspec

    checks.check_nonempty(path)
    if spec.folder:
        checks.check_folder_members(path, spec.required_members, spec.description)
        return
    if os.path.isdir(path):
        raise RecordingFailed(
            f"{path}: is a folder, but format {spec.key!r} expects a file", error_class="NotAFile"
        )
    if spec.companions is not None:
        try:
            companions = spec.companions(fsspec.filesystem("file"), path)
        except ValueError as exc:
            raise RecordingFailed(str(exc), error_class="UnsafeCompanion") from None
        for comp in companions:
            if comp.required and not os.path.exists(comp.path):
                raise RecordingFailed(
                    f"{path}: its {comp.role} {os.path.basename(comp.path)} is missing; "
                    "copy it beside the file",
                    error_class="MissingCompanion",
                )
            if comp.required:
                checks.check_nonempty(comp.path)
    if spec.key in _EDF_BYTES:
        checks.check_edf_header(path, bytes_per_sample=_EDF_BYTES[spec.key])


# --------------------------------------------------------------------------- staging


def _get(fs: AbstractFileSystem, rpath: str, local: str) -> None:
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fs.get_file(rpath, local)


def _stage(fs: AbstractFileSystem, rpath: str, spec: Format, tmp: str) -> str:
    """Copy the recording (and what it needs) under ``tmp``; return the local main path."""
    base = rpath.rstrip("/")
    name = posixpath.basename(base)
    dest = os.path.join(tmp, name)
    if not fs.exists(base):
        raise RecordingFailed(f"{base}: does not exist", error_class="MissingFile")
    if spec.folder or fs.isdir(base):
        files = fs.find(base)
        for member in files:
            rel = posixpath.relpath(member, base)
            try:
                target = safe_join(dest, rel)
            except ValueError as exc:
                raise RecordingFailed(f"{base}: {exc}", error_class="UnsafeCompanion") from None
            _get(fs, member, target)
        os.makedirs(dest, exist_ok=True)
        return dest
    _get(fs, base, dest)
    parent = posixpath.dirname(base)
    companions = []
    if spec.companions is not None:
        try:
            companions = spec.companions(fs, base)
        except ValueError as exc:
            raise RecordingFailed(str(exc), error_class="UnsafeCompanion") from None
    for comp in companions:
        rel = posixpath.relpath(comp.path, parent) if parent else comp.path
        try:
            target = safe_join(tmp, rel)
        except ValueError as exc:
            raise RecordingFailed(f"{base}: {exc}", error_class="UnsafeCompanion") from None
        if fs.exists(comp.path):
            _get(fs, comp.path, target)
    return dest


# --------------------------------------------------------------------------- reading


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


def _read(spec: Format, path: str) -> tuple[BaseRaw, str]:
    """Call the MNE reader; map any reader exception to :class:`RecordingFailed`."""
    import mne

    reader_name = f"mne.io.{spec.reader}"
    reader = getattr(mne.io, spec.reader)
    kwargs: dict[str, Any] = dict(spec.kwargs)
    try:
        if spec.resolve_kwargs is not None:
            kwargs.update(spec.resolve_kwargs(path))
        if spec.takes_preload:
            kwargs["preload"] = False
        raw = reader(path, verbose="error", **kwargs)
    except RecordingOutcome:
        raise
    # A reader fed a damaged or foreign file can raise almost anything (ValueError, KeyError,
    # struct.error, IndexError, UnicodeDecodeError, MemoryError...): all are data errors.
    except Exception as exc:  # noqa: BLE001
        raise _reader_failure(exc, spec, path) from exc
    return raw, reader_name


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


def _open_local(spec: Format, path: str, staged: bool) -> OpenedRaw:
    _check_local(spec, path)
    raw, reader_name = _read(spec, path)
    _guard_reads(raw, spec, path)
    if len(raw.ch_names) == 0:
        raise SkipRecording(
            f"{path}: no signal channels (the file holds only annotations, e.g. an EDF+ hypnogram)"
        )
    if raw.n_times <= 0:
        raise SkipRecording(f"{path}: no samples")
    _probe(raw, path)
    reason = "format needs it" if spec.needs_preload else None
    if reason is None and spec.preload_reason is not None:
        reason = spec.preload_reason(raw)
    if reason is not None:
        logger.info("preloading %s: %s", path, reason)
        try:
            raw.load_data(verbose="error")
        except (MemoryError, RecordingOutcome):
            raise
        except Exception as exc:  # noqa: BLE001 - reader internals on damaged data
            raise _reader_failure(exc, spec, path) from exc
    return OpenedRaw(raw, spec.key, reader_name, path, staged, reason)


def _rename(outcome: RecordingOutcome, local_root: str, remote_root: str) -> RecordingOutcome:
    """The same outcome with staged paths replaced by the URL they came from."""
    reason = outcome.reason.replace(local_root, remote_root)
    return type(outcome)(reason, error_class=outcome.error_class, transient=outcome.transient)


@contextmanager
def open_raw(
    uri: str,
    *,
    fmt: str | None = None,
    storage_options: dict | None = None,
    cache_dir: str | None = None,
) -> Iterator[OpenedRaw]:
    """Open ``uri`` (local path or fsspec URL) as a lazily read MNE Raw.

    ``fmt`` is a key of :data:`brainomni.readers.formats.FORMATS` (detected from the name when
    None). ``storage_options`` go to fsspec; ``cache_dir`` is where remote recordings are
    staged (a per-call subfolder, removed on exit; default the system temp folder).

    Raises :class:`RecordingFailed` for anything unreadable (the reason names the file and the
    fix) and :class:`SkipRecording` for a readable file without signal channels, and, without
    reading it, for a recording that holds no EEG/MEG (:func:`not_eeg_meg_reason`).
    """
    key = fmt or detect_format(uri, storage_options=storage_options)
    spec = get_format(key)
    skip = not_eeg_meg_reason(uri, spec)
    if skip is not None:
        raise SkipRecording(f"{uri}: {skip}; not read", error_class="NotEEGMEG")
    if not _is_url(uri):
        path = os.path.abspath(os.path.expanduser(uri)).rstrip(os.sep) or os.sep
        opened = _open_local(spec, path, staged=False)
        try:
            yield opened
        finally:
            opened.raw.close()
        return

    import fsspec

    try:
        fs, rpath = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise RecordingFailed(f"{uri}: cannot open this URL: {exc}", error_class="BadURL") from exc
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="brainomni-stage-", dir=cache_dir)
    try:
        try:
            local = _stage(fs, rpath, spec, tmp)
            opened = _open_local(spec, local, staged=True)
        except RecordingOutcome as outcome:
            raise _rename(outcome, tmp, posixpath.dirname(uri.rstrip("/"))) from outcome
        except (OSError, ValueError) as exc:  # object-store errors while staging
            from ..storage import is_transient

            raise RecordingFailed(
                f"{uri}: could not be copied for reading: {type(exc).__name__}: {exc}",
                error_class=f"StageError.{type(exc).__name__}",
                transient=is_transient(exc),
            ) from exc
        try:
            yield opened
        finally:
            opened.raw.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
