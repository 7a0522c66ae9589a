"""The direct FIF block reader gives MNE's ``get_data`` values (bit for bit for integer and
double buffers, within 4 float32 ulps for float buffers), on the real FIF files and on FIF
files built from them in every sample format, split across files, cropped and
concatenated; it stands aside where it does not apply."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from brainomni.readers.fifblocks import fif_block_reader
from tests.conftest import meeg_file

REAL_FIF = [
    "SSS/sample_audvis_trunc_raw_sss.fif",
    "SSS/test_move_anon_erm_raw.fif",
    "misc/neuromag122_test_file-raw.fif",
    "misc/sample_invalid_birthday_raw.fif",
]


def _picks(raw) -> np.ndarray:
    # data channels only, like the sensor table (skips stim/EOG in between: not a slice)
    return mne.pick_types(raw.info, meg=True, eeg=True, exclude=[])


def _check(raw, spans, *, exact: bool) -> None:
    picks = _picks(raw)
    reader = fif_block_reader(raw, picks)
    assert reader is not None, "the reader declined a plain FIF file"
    # a large offset (1000x the signal) makes float32 arithmetic work hardest
    offset = raw.get_data(picks=picks, start=0, stop=1) + 1e3 * raw.get_data(
        picks=picks, start=0, stop=min(raw.n_times, 500)
    ).std(axis=1, keepdims=True)
    try:
        for a, b in spans:
            mine = np.full((picks.size, b - a), np.nan, dtype=np.float32)
            reader.read_into(mine, a, b, offset)
            ref = raw.get_data(picks=picks, start=a, stop=b)
            want = (ref - offset).astype(np.float32)
            if exact:
                np.testing.assert_array_equal(mine, want, err_msg=f"samples [{a}, {b})")
            else:  # independent bound: 4 float32 ulps of the larger of |x cal| and |offset|
                ulp = np.spacing(np.maximum(np.abs(ref), np.abs(offset)).astype(np.float32))
                err = np.abs(mine.astype(np.float64) - want)
                assert np.all(err <= 4 * ulp), f"samples [{a}, {b}): {np.max(err / ulp)} ulps"
                assert np.any(mine != 0)
    finally:
        reader.close()


@pytest.mark.parametrize("rel", REAL_FIF)
def test_real_fif_files(rel):
    raw = mne.io.read_raw_fif(meeg_file(rel), allow_maxshield=True, verbose="error")
    n = raw.n_times
    _check(raw, [(0, n), (0, 1), (n - 1, n), (n // 3, n // 3 + 7), (n // 2, n)], exact=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sample recording tiled to 30 s and saved in each FIF sample format, in 0.37-s
    buffers and split into several files."""
    src = meeg_file(REAL_FIF[0])
    raw = mne.io.read_raw_fif(src, preload=True, verbose="error")
    d = raw.get_data()
    x = np.tile(np.concatenate([d, d[:, ::-1]], axis=1), (1, 15))
    # fresh noise: an exactly repeating signal would look clipped to the bad-channel rules
    x += 0.05 * x.std(axis=1, keepdims=True) * np.random.default_rng(0).standard_normal(x.shape)
    arr = mne.io.RawArray(x, raw.info, first_samp=raw.first_samp, verbose="error")
    out = {}
    tmp = tmp_path_factory.mktemp("fif")
    for fmt in ("short", "int", "single", "double"):
        p = tmp / f"tiled_{fmt}_raw.fif"
        arr.save(
            p, split_size="6MB", fmt=fmt, buffer_size_sec=0.37, overwrite=True, verbose="error"
        )
        out[fmt] = p
    return out


@pytest.mark.parametrize("fmt", ["short", "int", "single", "double"])
def test_every_sample_format_and_split_files(built, fmt):
    raw = mne.io.read_raw_fif(built[fmt], verbose="error")
    assert len(raw.filenames) > 1  # split: the spans below cross file boundaries
    n = raw.n_times
    edges = np.cumsum(raw._raw_lengths)[:-1]
    spans = [(0, n), (5, 6)] + [(int(e) - 50, int(e) + 50) for e in edges]
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = int(rng.integers(0, n - 1))
        spans.append((a, int(rng.integers(a + 1, min(n, a + 2000) + 1))))
    _check(raw, spans, exact=fmt != "single")


def test_cropped_and_concatenated(built):
    a = mne.io.read_raw_fif(built["single"], verbose="error").crop(1.3, 11.9)
    b = mne.io.read_raw_fif(built["int"], verbose="error").crop(2.0, None)
    k = a.n_times
    raw = mne.concatenate_raws([a, b], verbose="error")  # appends to ``a`` in place
    n = raw.n_times
    assert n == k + b.n_times
    _check(raw, [(0, n), (k - 10, k + 10), (k, k + 1), (n - 300, n)], exact=False)


def test_declines_where_it_does_not_apply(built):
    raw = mne.io.read_raw_fif(built["single"], preload=True, verbose="error")
    assert fif_block_reader(raw, _picks(raw)) is None  # preloaded: data are in memory
    raw = mne.io.read_raw_fif(built["single"], verbose="error")
    raw.apply_proj(verbose="error")  # the average-reference projector, applied on read
    assert fif_block_reader(raw, _picks(raw)) is None
    edf = mne.io.read_raw_edf(meeg_file("EDF/test_reduced.edf"), verbose="error")
    assert fif_block_reader(edf, np.arange(3)) is None


@pytest.mark.parametrize("fmt", ["single", "double"])
def test_preprocess_store_with_and_without_it(built, tmp_path, monkeypatch, fmt):
    """End to end: the store written through the direct reader equals MNE's path (exactly
    for double buffers; for float buffers within float32 rounding of the signal)."""
    import zarr

    import brainomni.readers.fifblocks as fb
    from brainomni.clean import preprocess_recording

    src = str(built[fmt])
    fast = preprocess_recording(src, out=str(tmp_path / "fast.zarr"))
    monkeypatch.setattr(fb, "fif_block_reader", lambda *a, **k: None)
    slow = preprocess_recording(src, out=str(tmp_path / "mne.zarr"))
    assert fast.outcome == slow.outcome == "ok"
    a = zarr.open_group(str(tmp_path / "fast.zarr"))["signal"][:]
    b = zarr.open_group(str(tmp_path / "mne.zarr"))["signal"][:]
    if fmt == "double":
        np.testing.assert_array_equal(a, b)
    else:
        scale = np.abs(b).max(axis=1, keepdims=True)
        bad = np.argwhere(np.abs(a - b) > 1e-5 * scale)
        assert bad.size == 0, (bad[:5], a[tuple(bad[0])], b[tuple(bad[0])], scale[bad[0][0]])
    assert fast.qc["bad_channels"] == slow.qc["bad_channels"]
