"""Neuroscan CNT: deciding the sample width (16 or 32 bit) that MNE must be told.

MNE's ``data_format="auto"`` needs the header's sample count and raises when it is 0 (as in
``scan41_short.cnt``) or when the file is over 2 GB; guessing wrong (int32 for int16 data)
reads garbage volts. We always pass an explicit width, decided from header fields only (not
from the signal, so the rule does not depend on the file being long or loud). Header fields
(SETUP, little-endian; the layout of EEGLAB's ``loadcnt.m`` and Paul Bourke's notes):
``nextfile`` (offset 12, int32), channel count (370, uint16), sample count (864, int32; often
0 or wrong), event-table offset (886, uint32; wraps past 4 GiB), ``channeloffset`` (894). The
samples start after the 900-byte SETUP and 75 bytes per channel. The rules, in order:

1. ``header-count``: the header's sample count is positive and the data region (up to the
   event table; modulo 2**32 for files whose offset wrapped) holds exactly that many samples
   at 2 or at 4 bytes: that width.
2. ``scan43-flag``: SCAN 4.3 files point ``nextfile`` at a tag block whose byte 52 is 1 for
   32-bit data and 0 for 16-bit (EEGLAB ``loadcnt``'s rule): that width.
3. ``size``: the data region divides evenly into 16-bit samples but not 32-bit ones: int16.
4. ``default``: int16, Neuroscan's native width and the default of ``loadcnt`` and of MNE.
"""

from __future__ import annotations

import logging
import os
import struct

logger = logging.getLogger(__name__)

_NEXTFILE_OFFSET = 12
_NCHANNELS_OFFSET, _NSAMPLES_OFFSET, _EVENTTABLE_OFFSET = 370, 864, 886
_SETUP_BYTES, _CHANNEL_BYTES = 900, 75
_FLAG_OFFSET = 52  # in the SCAN 4.3 tag block that ``nextfile`` points to
_WIDTHS = {2: "int16", 4: "int32"}


def cnt_width_rule(path: str) -> tuple[str, str]:
    """(``"int16"`` or ``"int32"``, the rule that decided it) for a local Neuroscan CNT file.

    A header too short or inconsistent to read gives ``("int16", "unreadable header")``; MNE
    then reports what is wrong with the file.
    """
    size = os.path.getsize(path)
    if size < _SETUP_BYTES:
        return "int16", "unreadable header"
    with open(path, "rb") as f:
        setup = f.read(_SETUP_BYTES)
        (nextfile,) = struct.unpack_from("<i", setup, _NEXTFILE_OFFSET)
        (n_ch,) = struct.unpack_from("<H", setup, _NCHANNELS_OFFSET)
        (n_samples,) = struct.unpack_from("<i", setup, _NSAMPLES_OFFSET)
        (event_offset,) = struct.unpack_from("<I", setup, _EVENTTABLE_OFFSET)
        flag = None
        if nextfile > 0 and nextfile + _FLAG_OFFSET < size:
            f.seek(nextfile + _FLAG_OFFSET)
            flag = f.read(1)[0]
    start = _SETUP_BYTES + _CHANNEL_BYTES * n_ch
    if n_ch == 0 or start > size:
        return "int16", "unreadable header"
    if n_samples > 0:
        for width, name in _WIDTHS.items():
            end = start + n_samples * n_ch * width
            if end <= size and end % 2**32 == event_offset:
                return name, "header-count"
    if flag in (0, 1) and nextfile >= start:
        return ("int32" if flag == 1 else "int16"), "scan43-flag"
    data_bytes = event_offset - start
    if data_bytes > 0 and data_bytes % (2 * n_ch) == 0 and data_bytes % (4 * n_ch) != 0:
        return "int16", "size"
    return "int16", "default"


def cnt_data_format(path: str) -> str:
    """``"int16"`` or ``"int32"``: the ``data_format`` MNE must be given for this file."""
    name, rule = cnt_width_rule(path)
    logger.debug("CNT %s: %s (rule %s)", path, name, rule)
    return name
