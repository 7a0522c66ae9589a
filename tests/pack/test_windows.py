"""Window maths against independent computations; QC reasons; config validation."""

from __future__ import annotations

import numpy as np
import pytest

from brainomni.formats.sample import (
    decode_sample,
    encode_sample,
    members,
    npy_load,
    sample_key,
    split_member,
)
from brainomni.pack import PackConfig, QCConfig, get_profile
from brainomni.pack.windows import (
    normalise_positions,
    normalise_window,
    qc_reason,
    window_starts,
)

EPS = (1e-5, 1e-13, 1e-13)


def test_window_starts_non_overlapping_and_exact_fit():
    assert window_starts(2560 * 3, 2560, 2560).tolist() == [0, 2560, 5120]  # ends exactly on n
    assert window_starts(2560 * 3 - 1, 2560, 2560).tolist() == [0, 2560]
    assert window_starts(100, 2560, 2560).size == 0
    assert window_starts(5000, 1000, 1500).tolist() == [0, 1500, 3000]


def test_profiles():
    assert (get_profile("tokenizer-10s").window, get_profile("tokenizer-10s").stride) == (
        2560,
        2560,
    )
    assert get_profile("omni-30s").window == 7680
    assert get_profile("omni-30s", dtype="float32").dtype == "float32"
    with pytest.raises(ValueError, match="unknown pack profile"):
        get_profile("nope")


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"dtype": "int16"}, "dtype"),
        ({"window_s": 0.001}, "window_s"),
        ({"eps_eeg": 0}, "eps_eeg"),
        ({"target_shard_bytes": 10}, "target_shard_bytes"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        PackConfig(**kw)
    with pytest.raises(ValueError, match="max_flat_fraction"):
        QCConfig(max_flat_fraction=2)


def _reference(x, types):
    """Spec §2.11 written out channel by channel, independently of the library."""
    out = np.zeros_like(x, dtype=np.float64)
    for t, eps in ((0, 1e-5), (1, 1e-13), (2, 1e-13)):
        idx = [i for i in range(len(types)) if types[i] == t]
        if not idx:
            continue
        car = np.array([x[i] - np.mean([x[j] for j in idx], axis=0) for i in idx])
        sd = np.sqrt(np.mean((car - car.mean()) ** 2))
        for k, i in enumerate(idx):
            out[i] = car[k] / (sd + eps)
    return out


def test_normalise_window_matches_reference_mixed_types():
    rng = np.random.default_rng(0)
    types = np.array([0] * 5 + [1] * 4 + [2] * 6, dtype=np.int8)
    scale = np.where(types == 0, 2e-5, np.where(types == 1, 1e-12, 5e-11))[:, None]
    x = rng.standard_normal((15, 512)) * scale + rng.standard_normal(512) * scale
    z, stds = normalise_window(x, types, eps=EPS, return_std=True)
    np.testing.assert_allclose(z, _reference(x, types), rtol=1e-5, atol=1e-6)
    for t in (0, 1, 2):
        g = z[types == t]
        np.testing.assert_allclose(g.mean(axis=0), 0, atol=1e-5)  # common average per type
    assert set(stds) == {0, 1, 2}


def test_normalise_positions_per_group():
    rng = np.random.default_rng(1)
    types = np.array([0] * 10 + [1] * 5 + [2] * 5, dtype=np.int8)
    pos = rng.standard_normal((20, 3)) * 0.1 + 0.05
    out, params = normalise_positions(pos, types)
    for mask in (types == 0, types > 0):
        p = out[mask].astype(np.float64)
        np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(np.sqrt(3 * np.mean(np.sum(p**2, axis=1))), 1, rtol=1e-5)
    back = out[types == 0] * params["EEG"]["scale"] + np.array(params["EEG"]["centroid"])
    np.testing.assert_allclose(back, pos[types == 0], rtol=1e-5, atol=1e-7)


def test_qc_reasons():
    rng = np.random.default_rng(2)
    types = np.zeros(8, dtype=np.int8)
    x = rng.standard_normal((8, 2560)) * 2e-5
    qc = QCConfig()
    assert qc_reason(x, types, qc) is None
    bad = x.copy()
    bad[3, 10] = np.nan
    assert qc_reason(bad, types, qc) == "nonfinite"
    flat = x.copy()
    flat[:2] = 0.0
    assert qc_reason(flat, types, qc) == "flat"
    assert qc_reason(x * 0, types, qc) == "flat"
    clip = x.copy()
    clip[4] = np.clip(clip[4], -1e-5, 1e-5)  # saturated: sits on its extremes
    assert qc_reason(clip, types, qc) == "clipped"
    huge = x.copy()
    huge[1, 100] = 1.0  # 1 V on an EEG channel
    assert qc_reason(huge, types, qc) == "clipped"


def test_sample_roundtrip_without_pickle():
    key = sample_key("abc123", 2560)
    assert key == "abc123_0000002560"
    sample = encode_sample(
        key,
        np.ones((3, 8), np.float16),
        np.zeros((3, 6), np.float32),
        np.array([0, 1, 2], np.int8),
        {"dataset": "ds"},
    )
    out = decode_sample(sample)
    assert out["signal"].dtype == np.float16 and out["meta"] == {"dataset": "ds"}
    for name, _ in members(sample):
        assert split_member(name)[0] == key
    for bad in ("../x.json", "/abs.json", "a.b.c.pyd", "k.pickle", "k"):
        with pytest.raises(ValueError):
            split_member(bad)
    with pytest.raises(ValueError, match="unsafe sample key"):
        sample_key("a.b", 0)
    obj = np.array([{"a": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    with pytest.raises(ValueError):
        npy_load(buf.getvalue())
