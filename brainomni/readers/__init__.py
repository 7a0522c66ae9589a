"""Reading recordings of any vendor format, from local paths or fsspec URLs.

``open_raw`` is the entry point; :mod:`brainomni.readers.formats` holds every per-format
quirk. Nothing here imports mne until a recording is opened.
"""

from brainomni.readers.formats import FORMATS, Format, detect_format, get_format
from brainomni.readers.open import (
    OpenedRaw,
    RawSummary,
    describe_raw,
    open_raw,
    recording_line_freq,
)

__all__ = [
    "FORMATS",
    "Format",
    "OpenedRaw",
    "RawSummary",
    "describe_raw",
    "detect_format",
    "get_format",
    "open_raw",
    "recording_line_freq",
]
