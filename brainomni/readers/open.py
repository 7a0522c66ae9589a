"""Open one recording from a local path or any fsspec URL, lazily, with every read problem
turned into an outcome (:class:`~brainomni.errors.RecordingFailed` or
:class:`~brainomni.errors.SkipRecording`).

Local paths are read in place. Any URL with a scheme (``s3://``, ``memory://``,
``file://``...) is staged, together with its companion files (or the whole folder for folder
formats), into a temporary folder that is removed when the ``with`` block ends.

How reader exceptions become outcomes (reasons, error classes, guarded block reads) is in
:mod:`brainomni.readers.failures`.
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
from brainomni.readers.companions import safe_join
from brainomni.readers.failures import _guard_reads, _probe, _reader_failure
from brainomni.readers.formats import Format, detect_format, get_format

if TYPE_CHECKING:  # pragma: no cover
    from fsspec import AbstractFileSystem
    from mne.io import BaseRaw

logger = logging.getLogger(__name__)

_EDF_BYTES = {"edf": 2, "bdf": 3}
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
            from ..io.retry import is_transient

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
