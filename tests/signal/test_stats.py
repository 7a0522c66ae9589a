"""Streaming statistics do not depend on how the recording is cut into blocks, and match
direct computations on the whole signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from brainomni.signal.stats import PSD_EVERY, ChannelStats


def _feed(x_in, y_out, cuts_in, cuts_out, **kw):
    st = ChannelStats(x_in.shape[0], 300.0, sfreq_out=256.0, **kw)
    for a, b in zip(cuts_in[:-1], cuts_in[1:], strict=True):
        st.update_input(x_in[:, a:b])
    for a, b in zip(cuts_out[:-1], cuts_out[1:], strict=True):
        st.update_output(y_out[:, a:b])
    return st


def _cuts(n, rng, max_len):
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, max_len))))
    return cuts


@pytest.mark.parametrize("max_len", [7, 301, 5000])
def test_block_sizes_leave_no_trace(max_len):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 300 * 41 + 123)).astype(np.float32)
    x[2, 1000:4000] = 0.5  # a flat stretch
    x[3] = np.clip(x[3], -1.0, 1.0)  # clipped
    y = rng.standard_normal((5, 256 * 37 + 50)).astype(np.float32)
    kw = {"rule_rows": [0, 2, 4], "rule_n_fft": 2048, "bad_spans": [(3000, 3100)]}
    whole = _feed(x, y, [0, x.shape[1]], [0, y.shape[1]], **kw)
    cut = _feed(x, y, _cuts(x.shape[1], rng, max_len), _cuts(y.shape[1], rng, max_len), **kw)
    ww, wc = whole.windows(), cut.windows()
    for k in ("ptp", "max", "min"):
        np.testing.assert_array_equal(wc[k], ww[k], err_msg=k)
    # counts at the extremes are kept (exactly) at least for the windows that reach the
    # recording's extreme, which is all the clipping rule reads
    w = x[:, : ww["max"].shape[1] * 300].reshape(5, -1, 300)
    for key, ext, glob in (
        ("n_at_max", w.max(axis=2), ww["max"].max(axis=1, keepdims=True)),
        ("n_at_min", w.min(axis=2), ww["min"].min(axis=1, keepdims=True)),
    ):
        true = (w == ext[:, :, None]).sum(axis=2)
        for counts in (ww[key], wc[key]):
            kept = counts > 0
            np.testing.assert_array_equal(counts[kept], true[kept], err_msg=key)
            assert kept[ext == glob].all(), key
    np.testing.assert_allclose(cut.psd()[1], whole.psd()[1], rtol=1e-6)
    assert cut.psd_count == whole.psd_count
    np.testing.assert_allclose(cut.rule_psd()[1], whole.rule_psd()[1], rtol=1e-6)
    assert cut.rule_count == whole.rule_count == 4 - 1  # 4 whole segments, one hit


def test_windows_and_welch_against_direct_computations():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 300 * 20)).astype(np.float32)
    y = rng.standard_normal((3, 256 * 40)).astype(np.float32)
    st = _feed(x, y, _cuts(x.shape[1], rng, 997), _cuts(y.shape[1], rng, 997))
    w = x.reshape(3, 20, 300)
    win = st.windows()
    np.testing.assert_array_equal(win["max"], w.max(axis=2))
    np.testing.assert_array_equal(win["min"], w.min(axis=2))
    np.testing.assert_array_equal(win["ptp"], np.ptp(w, axis=2))
    # Welch over every PSD_EVERY-th 1-s segment = scipy's Welch on those segments
    segs = y.reshape(3, 40, 256)[:, ::PSD_EVERY].reshape(3, -1)
    f, ref = welch(segs, fs=256.0, window="hamming", nperseg=256, noverlap=0, detrend="constant")
    freqs, psd = st.psd()
    np.testing.assert_allclose(freqs, f)
    np.testing.assert_allclose(psd, ref, rtol=1e-4)


def test_rule_psd_is_mne_compute_psd_defaults():
    """The rule PSD equals MNE's Welch with ``Raw.compute_psd``'s defaults (n_fft 2048,
    capped at the length) on the rule's rows: a long signal (trailing partial segment
    dropped) and one shorter than 2048 samples of odd length (one segment, no Nyquist)."""
    from mne.time_frequency import psd_array_welch

    rng = np.random.default_rng(3)
    for n, rows in ((256 * 37 + 50, [1, 3]), (1001, [1, 2])):  # rows apart, and a range
        y = rng.standard_normal((4, n)) * np.array([[1.0], [2.0], [0.5], [3.0]]) + 7.0
        y = y.astype(np.float32)
        y0 = y.copy()
        st = _feed(y[:, :10], y, [0, 10], _cuts(n, rng, 700), rule_rows=rows, n_out_total=n)
        np.testing.assert_array_equal(y, y0)  # the output blocks are left untouched
        freqs, psd = st.rule_psd()
        ref, f = psd_array_welch(
            y[rows].astype(np.float64), 256.0, n_fft=min(n, 2048), verbose="error"
        )
        np.testing.assert_allclose(freqs, f)
        np.testing.assert_allclose(psd, ref, rtol=2e-4, atol=1e-12)


def test_rule_psd_skips_segments_in_bad_spans():
    rng = np.random.default_rng(4)
    y = rng.standard_normal((2, 2048 * 5)).astype(np.float32)
    y[:, 2048 * 2 + 100 : 2048 * 2 + 200] = 1e3  # an artefact inside a BAD annotation
    st = _feed(y[:, :10], y, [0, 10], [0, y.shape[1]], rule_rows=[0, 1],
               bad_spans=[(2048 * 2 + 90, 2048 * 2 + 210)])  # fmt: skip
    good = np.delete(y.reshape(2, 5, 2048), 2, axis=1).reshape(2, -1)
    f, ref = welch(good, fs=256.0, window="hamming", nperseg=2048, noverlap=0)
    np.testing.assert_allclose(st.rule_psd()[1], ref, rtol=2e-4)
    assert st.rule_count == 4
