"""The Neuroscan CNT sample-width rule on files written in both widths from the real
``scan41_short.cnt`` (its data block rewritten as int16 or int32, headers set per variant)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from brainomni.readers import open_raw
from brainomni.readers.cnt import cnt_width_rule
from tests.conftest import meeg_file

SRC = "CNT/scan41_short.cnt"
EVENT_BYTES = 19  # SCAN event type 2/3 record; its byte offset into the file is at +4


def _parts():
    raw = meeg_file(SRC).read_bytes()
    (nextfile,) = struct.unpack_from("<i", raw, 12)
    (n_ch,) = struct.unpack_from("<H", raw, 370)
    (event_offset,) = struct.unpack_from("<i", raw, 886)
    start = 900 + 75 * n_ch
    samples = np.frombuffer(raw[start:event_offset], "<i2")  # the real file is 16-bit
    return raw, nextfile, n_ch, start, event_offset, samples


def write_cnt(dest, *, width: int, header_samples: bool, scan43_flag: int | None) -> None:
    """scan41_short.cnt with its samples stored at ``width`` bytes; the event table and
    the tag block that follow are moved (and their byte offsets updated) accordingly.
    ``header_samples``: write the true sample count (else 0, as in the original);
    ``scan43_flag``: keep the SCAN 4.3 tag block with that 32-bit flag, or (None) drop the
    ``nextfile`` pointer."""
    raw, nextfile, n_ch, start, old_ev, samples = _parts()
    data = samples.astype("<i2" if width == 2 else "<i4").tobytes()
    new_ev = start + len(data)
    head = bytearray(raw[:start])
    tail = bytearray(raw[old_ev:])
    (table_type,) = struct.unpack_from("<b", tail, 0)
    (table_size,) = struct.unpack_from("<i", tail, 1)
    assert table_type == 2 and table_size % EVENT_BYTES == 0
    for k in range(table_size // EVENT_BYTES):  # event positions are byte offsets
        at = 9 + k * EVENT_BYTES + 4
        (off,) = struct.unpack_from("<i", tail, at)
        struct.pack_into("<i", tail, at, start + (off - start) * width // 2)
    struct.pack_into("<i", head, 886, new_ev)
    struct.pack_into("<i", head, 864, len(samples) // n_ch if header_samples else 0)
    if scan43_flag is None:
        struct.pack_into("<i", head, 12, 0)
    else:
        moved = nextfile - old_ev + new_ev
        struct.pack_into("<i", head, 12, moved)
        tail[nextfile - old_ev + 52] = scan43_flag
    dest.write_bytes(bytes(head) + data + bytes(tail))


@pytest.fixture(scope="module")
def reference():
    """Samples (volts) and annotation onsets of the real file, read by MNE as int16."""
    import mne

    raw = mne.io.read_raw_cnt(str(meeg_file(SRC)), data_format="int16", verbose="error")
    assert len(raw.annotations) == 6  # events exist, so their moved offsets are checked
    return raw.get_data(), raw.annotations.onset.copy()


@pytest.mark.parametrize(
    ("width", "header_samples", "flag", "expect"),
    [
        (4, True, None, ("int32", "header-count")),
        (4, False, 1, ("int32", "scan43-flag")),
        (4, True, 1, ("int32", "header-count")),
        (2, True, None, ("int16", "header-count")),
        (2, False, 0, ("int16", "scan43-flag")),
        (2, False, None, ("int16", "default")),
    ],
)
def test_width_from_the_header(tmp_path, reference, width, header_samples, flag, expect):
    path = tmp_path / f"w{width}.cnt"
    write_cnt(path, width=width, header_samples=header_samples, scan43_flag=flag)
    assert cnt_width_rule(str(path)) == expect
    data, onsets = reference
    with open_raw(str(path)) as opened:  # the registry passes the decided width to MNE
        got = opened.raw.get_data()
        assert opened.raw.n_times == data.shape[1]
        np.testing.assert_allclose(opened.raw.annotations.onset, onsets)
    np.testing.assert_allclose(got, data, rtol=1e-12, atol=0)


def test_the_wrong_width_would_be_garbage(tmp_path, reference) -> None:
    """The variants really differ: the int32 file read as int16 is not the recording."""
    import mne

    path = tmp_path / "w4.cnt"
    write_cnt(path, width=4, header_samples=False, scan43_flag=1)
    wrong = mne.io.read_raw_cnt(str(path), data_format="int16", verbose="error")
    assert wrong.n_times == 2 * reference[0].shape[1]


def test_original_file_rule() -> None:
    # sample count 0 (MNE's auto raises); its SCAN 4.3 tag block says 16 bit
    assert cnt_width_rule(str(meeg_file(SRC))) == ("int16", "scan43-flag")


def _header_only(path, *, n_ch: int, n_samples: int, event_offset: int, size: int) -> None:
    """A sparse file with just the SETUP fields the rule reads (no real samples)."""
    head = bytearray(900 + 75 * n_ch)
    struct.pack_into("<H", head, 370, n_ch)
    struct.pack_into("<i", head, 864, n_samples)
    struct.pack_into("<I", head, 886, event_offset % 2**32)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def test_event_offset_wrapped_past_4_gib(tmp_path) -> None:
    """Over 4 GiB the uint32 event-table offset wraps; the header count still decides."""
    n_ch, n = 64, 20_000_000  # 64 ch x 20 M samples x 4 bytes = 5.12 GB
    start = 900 + 75 * n_ch
    for width, name in ((4, "int32"), (2, "int16")):
        end = start + n_ch * n * width
        path = tmp_path / f"big{width}.cnt"
        _header_only(path, n_ch=n_ch, n_samples=n, event_offset=end, size=end + 100)
        assert cnt_width_rule(str(path)) == (name, "header-count")


def test_size_rule_when_only_16_bit_divides(tmp_path) -> None:
    n_ch = 32
    start = 900 + 75 * n_ch
    path = tmp_path / "odd.cnt"
    end = start + n_ch * 2 * 1001  # 1001 16-bit samples: not a whole number of 32-bit ones
    _header_only(path, n_ch=n_ch, n_samples=0, event_offset=end, size=end + 50)
    assert cnt_width_rule(str(path)) == ("int16", "size")
