"""Neuroscan CNT: deciding the sample width (16 or 32 bit) that MNE must be told.

The SETUP header holds the channel count (offset 370, uint16), the sample count (offset 864,
int32; often 0 or wrong) and the event-table offset (886, int32); samples start after the
900-byte SETUP and 75 bytes per channel. The rule:

1. The header's sample count is positive and the data region holds exactly that many samples
   at 2 or 4 bytes: use that width.
2. Otherwise (e.g. ``scan41_short.cnt``: sample count 0, where MNE's ``"auto"`` raises), list
   the widths that divide the data region evenly. With one candidate, use it. With two, read
   the first second both ways and keep the width whose median absolute EEG value is
   physiological (below 10 mV): reading 16-bit data as 32-bit joins two samples into one
   number and gives values near 1 V, while the true width gives tens of microvolts.
3. Still undecided: 16 bit, Neuroscan's native width and the default of EEGLAB's ``loadcnt``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

_NCHANNELS_OFFSET, _NSAMPLES_OFFSET, _EVENTTABLE_OFFSET = 370, 864, 886
_SETUP_BYTES, _CHANNEL_BYTES = 900, 75
PLAUSIBLE_MEDIAN_V = 10e-3  # V; median |EEG| above this means the sample width is wrong
_WIDTHS = {2: "int16", 4: "int32"}


def _header(path: str) -> tuple[int, int, int, int] | None:
    """(n_channels, n_samples, data_start, data_bytes), or None when unreadable."""
    size = os.path.getsize(path)
    if size < _SETUP_BYTES:
        return None
    with open(path, "rb") as f:
        f.seek(_NCHANNELS_OFFSET)
        n_ch = int(np.frombuffer(f.read(2), "<u2")[0])
        f.seek(_NSAMPLES_OFFSET)
        n_samples = int(np.frombuffer(f.read(4), "<i4")[0])
        f.seek(_EVENTTABLE_OFFSET)
        event_offset = int(np.frombuffer(f.read(4), "<i4")[0])
    start = _SETUP_BYTES + _CHANNEL_BYTES * n_ch
    if n_ch == 0 or not start < event_offset <= size:
        return None
    return n_ch, n_samples, start, event_offset - start


def _median_abs_eeg(path: str, data_format: str) -> float:
    """Median |EEG| in volts over the first second read with ``data_format`` (inf on error)."""
    import mne

    try:
        raw = mne.io.read_raw_cnt(path, data_format=data_format, preload=False, verbose="error")
        stop = min(raw.n_times, max(1, int(raw.info["sfreq"])))
        picks = mne.pick_types(raw.info, eeg=True) if "eeg" in raw else None
        return float(np.median(np.abs(raw.get_data(picks=picks, start=0, stop=stop))))
    except (ValueError, RuntimeError, OSError):
        return float("inf")


def cnt_data_format(path: str) -> str:
    """``"int16"``, ``"int32"`` or ``"auto"`` (leave it to MNE) for a local Neuroscan CNT file."""
    head = _header(path)
    if head is None:
        return "auto"  # MNE reports what is wrong with the header
    n_ch, n_samples, _, data_bytes = head
    if n_samples > 0:
        for width, name in _WIDTHS.items():
            if data_bytes == n_samples * n_ch * width:
                return name
        return "auto"
    candidates = [name for width, name in _WIDTHS.items() if data_bytes % (n_ch * width) == 0]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        medians = {name: _median_abs_eeg(path, name) for name in candidates}
        plausible = [n for n in candidates if medians[n] < PLAUSIBLE_MEDIAN_V]
        logger.debug("CNT %s: median |EEG| per width %s", path, medians)
        if len(plausible) == 1:
            return plausible[0]
    logger.info("CNT %s: sample width undecidable from the header; using int16", path)
    return "int16"
