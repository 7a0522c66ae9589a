"""The single zero-phase filter + resampler: response, block independence, timing."""

import numpy as np
import pytest

from brainomni.signal.config import CleanConfig
from brainomni.signal.design import plan_bandpass, plan_chain, rational_ratio
from brainomni.signal.stream import filter_resample

CFG = CleanConfig()


@pytest.mark.parametrize(
    ("sfreq", "up", "down"),
    [(1000.0, 32, 125), (1200.0, 16, 75), (2048.0, 1, 8), (250.0, 128, 125), (512.0, 1, 2)],
)
def test_rational_ratio_exact(sfreq, up, down):
    r = rational_ratio(sfreq, 256.0)
    assert (r.up, r.down, r.rate_error) == (up, down, 0.0)


def test_rational_ratio_for_non_rational_header_rate():
    r = rational_ratio(300.3074951171875, 256.0)  # decimated Neuromag sample file
    assert r.rate_error <= 1e-6
    assert abs(r.up / r.down - 256 / 300.3074951171875) / (
        256 / 300.3074951171875
    ) == pytest.approx(r.rate_error)


def _amplitude(y, sfreq, f):
    t = np.arange(y.size) / sfreq
    c = np.exp(-2j * np.pi * f * t)
    return 2 * np.abs(np.dot(y, c)) / y.size


@pytest.mark.parametrize("sfreq", [1000.0, 1200.0, 300.0, 200.0])
def test_passband_flat_line_and_band_edges_suppressed(sfreq):
    """Sinusoids through the chain: flat pass band, notch at the line, nothing above 96 Hz."""
    t = np.arange(int(sfreq * 120)) / sfreq
    freqs = [2.0, 10.0, 30.0, 50.0, 70.0, 90.0]
    if sfreq >= 300:
        freqs += [115.0, 125.0]
    x = np.stack([np.sin(2 * np.pi * f * t) + 5.0 for f in freqs])  # plus a DC offset
    plans = plan_chain(sfreq, len(freqs), CFG, line_freq=50.0)
    y = filter_resample(x, plans)
    n_out = t.size
    for p in plans:
        n_out = p.n_out(n_out)
    assert y.shape == (len(freqs), n_out)
    mid = y[:, 25 * 256 : -25 * 256]
    for row, f in zip(mid, freqs, strict=True):
        a = _amplitude(row, 256.0, f)
        if f == 50.0:
            assert a < 0.01, f"line not notched: {a}"
        elif f <= 90.0 and f < sfreq / 2 - 2:
            assert a == pytest.approx(1.0, abs=0.01), f"{f} Hz gain {a}"
        elif f < 120.0:  # MNE's upper transition band: 96 Hz to 120 Hz (-6 dB at 108 Hz)
            assert a < 0.15, f"{f} Hz not attenuated: {a}"
        else:
            assert a < 0.01, f"{f} Hz not suppressed: {a}"
        assert abs(row.mean()) < 1e-3  # DC removed exactly


def test_output_timing_matches_sample_grid():
    """An impulse-free check of delay: a 7 Hz sine comes out with the same phase."""
    sfreq = 1000.0
    t = np.arange(int(sfreq * 100)) / sfreq
    x = np.sin(2 * np.pi * 7.0 * t + 0.3)[None]
    y = filter_resample(x, plan_chain(sfreq, 1, CFG, line_freq=50.0))[0]
    tt = np.arange(y.size) / 256.0
    ref = np.sin(2 * np.pi * 7.0 * tt + 0.3)
    mid = slice(25 * 256, -25 * 256)
    assert np.max(np.abs(y[mid] - ref[mid])) < 3e-3


@pytest.mark.parametrize("sfreq", [1000.0, 300.3074951171875, 200.0, 1200.0])
def test_blocks_leave_no_trace(sfreq):
    """Small blocks vs one block over the whole signal: equal to float32 precision."""
    rng = np.random.default_rng(0)
    n = int(sfreq * 200)
    x = np.cumsum(rng.standard_normal((3, n)), axis=1) * 1e-6 + 1e-3  # random walk + DC
    small = filter_resample(x, plan_chain(sfreq, 3, CFG.with_(block_seconds=10.0), line_freq=60.0))
    whole = filter_resample(x, plan_chain(sfreq, 3, CFG.with_(block_seconds=1e5), line_freq=60.0))
    assert small.shape == whole.shape
    # float32 FFTs: rounding is relative to the input's magnitude (DC offset included)
    assert np.abs(small - whole).max() <= 1e-5 * np.abs(x).max()
    assert np.abs(small - whole).max() <= 1e-4 * np.abs(whole).max()


def test_short_signal_single_block():
    x = np.random.default_rng(1).standard_normal((2, 450))  # 0.45 s at 1 kHz
    y = filter_resample(x, plan_chain(1000.0, 2, CFG))
    assert y.shape == (2, round(450 * 256 / 1000))
    assert np.all(np.isfinite(y))


def test_memory_bound_shapes_blocks():
    """Many channels shorten the block so one float32 buffer stays under block_bytes."""
    cfg = CFG.with_(block_bytes=256 * 2**20)
    few = plan_bandpass(64, cfg, sfreq_in=1000.0)
    many = plan_bandpass(1000, cfg, sfreq_in=1000.0)
    assert many.nfft_in < few.nfft_in
    floor = 4 * many.margin_in + 2 * many.ratio.down  # a block always holds its margins
    assert many.nfft_in <= 1.05 * max(256 * 2**20 // (4 * 1000), floor)
    for p in (few, many):
        assert p.hop_in % p.ratio.down == 0 and p.margin_in % p.ratio.down == 0
        assert p.hop_in > 0 and p.nfft_in == p.hop_in + 2 * p.margin_in


def test_kernel_disk_cache(tmp_path, monkeypatch):
    """Designed kernels are kept on disk for the next process; the cached kernel equals a
    fresh design, and a damaged cache file is ignored and replaced."""
    from brainomni.signal import design

    monkeypatch.setenv("BRAINOMNI_CACHE_DIR", str(tmp_path))
    args = (256.0, 0.1, 96.0, (50.0, 100.0), 1.0)
    fresh = design._design_kernel(*args)
    design._kernel.cache_clear()
    first = design._kernel(*args)
    files = list((tmp_path / "kernels").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(first, fresh)
    design._kernel.cache_clear()
    np.testing.assert_array_equal(design._kernel(*args), fresh)  # from disk
    files[0].write_bytes(b"not a numpy file")
    design._kernel.cache_clear()
    np.testing.assert_array_equal(design._kernel(*args), fresh)
    assert np.load(files[0], allow_pickle=False).shape == fresh.shape  # rewritten
    design._kernel.cache_clear()
