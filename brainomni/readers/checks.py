"""Cheap checks run on the local files before MNE opens them, so that common damage
(empty files, truncation, missing companions) ends with a precise reason instead of a
reader's stack trace. Each check raises :class:`~brainomni.errors.RecordingFailed`.
"""

from __future__ import annotations

import fnmatch
import os

from brainomni.errors import RecordingFailed

EDF_FIXED_HEADER = 256  # bytes
_EDF_PER_SIGNAL = 256  # bytes of header per signal
# offsets of the per-signal "number of samples per record" field, in units of ns
_EDF_NSAMP_BEFORE = 16 + 80 + 8 + 8 + 8 + 8 + 8 + 80  # label..prefiltering


def check_nonempty(path: str) -> None:
    """The file exists and holds at least one byte."""
    if not os.path.exists(path):
        raise RecordingFailed(f"{path}: file does not exist", error_class="MissingFile")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise RecordingFailed(
            f"{path}: file is empty (0 bytes); re-copy or re-download it",
            error_class="EmptyFile",
        )


def check_folder_members(path: str, patterns: tuple[str, ...], description: str) -> None:
    """A folder format holds a non-empty file matching each glob pattern."""
    if not os.path.isdir(path):
        raise RecordingFailed(
            f"{path}: {description} must be a folder; pass the folder itself",
            error_class="NotAFolder",
        )
    names = os.listdir(path)
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
        if not hits:
            raise RecordingFailed(
                f"{path}: {description} has no {pattern} file; copy the whole folder "
                f"(it holds {', '.join(sorted(names)) or 'nothing'})",
                error_class="MissingCompanion",
            )
        if all(os.path.getsize(os.path.join(path, n)) == 0 for n in hits):
            raise RecordingFailed(
                f"{path}: {description} member {hits[0]} is empty (0 bytes)",
                error_class="EmptyFile",
            )


def _field(raw: bytes, what: str, path: str) -> int:
    text = raw.decode("ascii", errors="replace").strip()
    try:
        return int(float(text))
    except ValueError:
        raise RecordingFailed(
            f"{path}: EDF/BDF header field {what} is {text!r}, not a number; the file is not "
            "a valid EDF/BDF (corrupt or another format)",
            error_class="CorruptHeader",
        ) from None


def check_edf_header(path: str, *, bytes_per_sample: int) -> None:
    """EDF (2 bytes/sample) or BDF (3): the header is complete and the file holds every data
    record the header promises. A header with ``n_records = -1`` (unknown) is accepted."""
    size = os.path.getsize(path)
    if size < EDF_FIXED_HEADER:
        raise RecordingFailed(
            f"{path}: truncated: {size} bytes, shorter than the 256-byte EDF/BDF header",
            error_class="TruncatedFile",
        )
    with open(path, "rb") as f:
        fixed = f.read(EDF_FIXED_HEADER)
        n_signals = _field(fixed[252:256], "number of signals", path)
        n_records = _field(fixed[236:244], "number of data records", path)
        if n_signals <= 0 or n_signals > 100_000:
            raise RecordingFailed(
                f"{path}: EDF/BDF header declares {n_signals} signals", error_class="CorruptHeader"
            )
        header_bytes = EDF_FIXED_HEADER + _EDF_PER_SIGNAL * n_signals
        if size < header_bytes:
            raise RecordingFailed(
                f"{path}: truncated: {size} bytes, shorter than its own {header_bytes}-byte "
                f"header ({n_signals} signals); re-copy or re-download it",
                error_class="TruncatedFile",
            )
        f.seek(EDF_FIXED_HEADER + _EDF_NSAMP_BEFORE * n_signals)
        nsamp_raw = f.read(8 * n_signals)
    samples = [
        _field(nsamp_raw[8 * i : 8 * i + 8], f"samples per record (signal {i + 1})", path)
        for i in range(n_signals)
    ]
    record_bytes = sum(samples) * bytes_per_sample
    if record_bytes <= 0:
        raise RecordingFailed(
            f"{path}: EDF/BDF header declares data records of {record_bytes} bytes",
            error_class="CorruptHeader",
        )
    held = (size - header_bytes) // record_bytes
    if n_records >= 0 and held < n_records:
        raise RecordingFailed(
            f"{path}: truncated: the header promises {n_records} data records of "
            f"{record_bytes} bytes but the file holds {held} complete records "
            f"({size} bytes, expected {header_bytes + n_records * record_bytes}); "
            "re-copy or re-download it",
            error_class="TruncatedFile",
        )
