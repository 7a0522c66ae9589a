"""Every real recording in ../shared/data/meeg opens (or ends as the right skip), lazily,
and block reads without preloading equal the preloaded data."""

from __future__ import annotations

import numpy as np
import pytest

from brainomni.errors import SkipRecording
from brainomni.readers import describe_raw, open_raw, recording_line_freq
from tests.conftest import meeg_file

# rel path, format key, n_channels, sfreq (Hz), n_times
READABLE = [
    ("SSS/sample_audvis_trunc_raw_sss.fif", "fif", 376, 300.3074951171875, 301),
    ("SSS/test_move_anon_erm_raw.fif", "fif", 392, 1200.0, 1201),
    ("misc/neuromag122_test_file-raw.fif", "fif", 129, 1000.0, 1001),
    ("misc/sample_invalid_birthday_raw.fif", "fif", 1, 300.3074951171875, 31),
    ("CTF/testdata_ctf_short_discontinuous.ds", "ctf", 356, 1200.0, 2402),
    ("KIT/MQKIT_125_2sec.con", "kit", 193, 1000.0, 2000),
    ("EDF/test_reduced.edf", "edf", 139, 512.0, 3072),
    ("EDF/test_edf_overlapping_annotations.edf", "edf", 64, 128.0, 15872),
    ("BDF/test_generator_2.bdf", "bdf", 11, 200.0, 120000),
    ("BDF/test_bdf_stim_channel.bdf", "bdf", 4, 500.0, 5000),
    ("Brainvision/test_NO.vhdr", "brainvision", 65, 5000.0, 2238),
    ("EEGLAB/test_raw.set", "eeglab", 32, 128.0, 30504),
    ("CNT/scan41_short.cnt", "cnt", 128, 400.0, 3070),
    ("GDF/test_1ch.gdf", "gdf", 1, 150.0, 4500),
    ("EGI/test_egi_multiepoch_eprime.mff", "egi_mff", 263, 250.0, 4006),
]


@pytest.mark.parametrize(("rel", "key", "n_ch", "sfreq", "n_times"), READABLE)
def test_real_file_opens_lazily(rel: str, key: str, n_ch: int, sfreq: float, n_times: int) -> None:
    path = meeg_file(rel)
    with open_raw(str(path)) as opened:
        summary = describe_raw(opened.raw)
        assert opened.fmt == key
        assert opened.reader.startswith("mne.io.read_raw")
        assert not opened.staged and opened.local_path == str(path)
        assert (summary.n_channels, summary.sfreq, summary.n_times) == (n_ch, sfreq, n_times)
        assert summary.duration_s == pytest.approx(n_times / sfreq)
        # lazily read, except the mixed-rate EDF (see test_mixed_rate_edf_is_preloaded)
        assert opened.raw.preload == (rel == "EDF/test_reduced.edf")


def test_hypnogram_is_a_skip_not_a_failure() -> None:
    with (
        pytest.raises(SkipRecording, match="no signal channels") as info,
        open_raw(str(meeg_file("EDF/SC4001EC-Hypnogram.edf"))),
    ):
        pass
    assert info.value.outcome == "skipped"
    assert "SC4001EC-Hypnogram.edf" in info.value.reason


def test_line_freq_only_when_the_file_says_so() -> None:
    with open_raw(str(meeg_file("SSS/test_move_anon_erm_raw.fif"))) as opened:
        assert recording_line_freq(opened.raw) == 60.0
    with open_raw(str(meeg_file("EDF/test_edf_overlapping_annotations.edf"))) as opened:
        assert recording_line_freq(opened.raw) is None


def test_cnt_reads_plausible_volts() -> None:
    with open_raw(str(meeg_file("CNT/scan41_short.cnt"))) as opened:
        x = opened.raw.get_data(picks="eeg", start=0, stop=400)
    assert 1e-7 < np.median(np.abs(x)) < 1e-3  # microvolts, not the ~1 V of int32


def _blocks(n_times: int) -> list[tuple[int, int]]:
    """Blocks that start at 0, straddle the middle, and end at the last sample."""
    size = max(1, min(n_times // 3, 700))
    mid = n_times // 2
    return [
        (0, size),
        (max(0, mid - size // 2), min(n_times, mid + size // 2 + 1)),
        (n_times - size, n_times),
    ]


@pytest.mark.parametrize(("rel", "key"), [(r[0], r[1]) for r in READABLE])
def test_block_reads_equal_preloaded_data(rel: str, key: str) -> None:
    import mne

    path = meeg_file(rel)
    with open_raw(str(path)) as opened:
        raw = opened.raw
        reference = raw.copy().load_data(verbose="error") if not raw.preload else None
        if reference is None:  # already preloaded: compare with a fresh whole-file read
            reader = getattr(mne.io, opened.reader.rsplit(".", 1)[1])
            reference = reader(str(path), preload=True, verbose="error")
        picks = np.arange(len(raw.ch_names))[:: max(1, len(raw.ch_names) // 40)]
        for start, stop in _blocks(raw.n_times):
            block = raw.get_data(picks=picks, start=start, stop=stop)
            assert block.shape == (len(picks), stop - start)
            np.testing.assert_array_equal(
                block,
                reference.get_data(picks=picks, start=start, stop=stop),
                err_msg=f"{rel} block {start}:{stop}",
            )


def test_mixed_rate_edf_is_preloaded() -> None:
    """MNE upsamples slow EDF channels differently per block than for the whole file."""
    with open_raw(str(meeg_file("EDF/test_reduced.edf"))) as opened:
        assert opened.preloaded and "different rates" in opened.preload_reason
    with open_raw(str(meeg_file("EDF/test_edf_overlapping_annotations.edf"))) as opened:
        assert not opened.preloaded and opened.preload_reason is None
