"""The cleaning config is frozen, validated, and its hash changes with every parameter."""

from dataclasses import fields

import pytest

from brainomni.signal.config import CleanConfig


def _changed(cfg: CleanConfig, name: str):
    v = getattr(cfg, name)
    if isinstance(v, bool):
        return not v
    if name == "line_freq":
        return 50.0
    if name == "eeg_reference":
        return "none"
    if name == "interpolate_mode":
        return "fast"
    if name == "interpolate_origin":
        return (0.0, 0.0, 0.05)
    if name == "fallback_line_freqs":
        return (60.0,)
    if name == "flat_abs":
        return (("V", 1e-9),)
    if name == "schema":
        return v + 1
    if name == "h_freq":
        return 90.0
    if name == "l_freq":
        return 0.5
    if name == "sfreq":
        return 512.0
    if name == "max_bad_fraction":
        return 0.4
    if name == "block_seconds":
        return 60.0
    if name == "psd_fmax":
        return 90.0 if v is None else None
    if name == "psd_fmin":
        return 1.0
    if isinstance(v, int):
        return v + 1
    return v * 1.5


def test_hash_changes_with_every_parameter():
    base = CleanConfig()
    seen = {base.hash}
    for f in fields(CleanConfig):
        other = base.with_(**{f.name: _changed(base, f.name)})
        assert other.hash != base.hash, f"hash ignores {f.name}"
        seen.add(other.hash)
    assert len(seen) == len(fields(CleanConfig)) + 1


def test_hash_is_stable_and_round_trips():
    a, b = CleanConfig(), CleanConfig()
    assert a.hash == b.hash and len(a.hash) == 16
    assert CleanConfig.from_dict(a.to_dict()) == a
    assert CleanConfig.from_dict(a.to_dict()).hash == a.hash


def test_frozen_and_validated():
    cfg = CleanConfig()
    with pytest.raises(AttributeError):
        cfg.l_freq = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="l_freq"):
        CleanConfig(l_freq=100.0)
    with pytest.raises(ValueError, match="Nyquist"):
        CleanConfig(h_freq=130.0)
    with pytest.raises(ValueError, match="unknown fields"):
        CleanConfig.from_dict({"nope": 1})


def test_line_frequencies_and_harmonics():
    cfg = CleanConfig()
    assert cfg.notch_freqs(None, 1000.0) == (50.0, 60.0)  # unknown: both, no harmonic < 96
    assert cfg.notch_freqs(50.0, 1000.0) == (50.0,)
    assert CleanConfig(h_freq=120.0, sfreq=512.0).notch_freqs(50.0, 2000.0) == (50.0, 100.0)
    assert cfg.with_(line_freq=60.0).notch_freqs(50.0, 1000.0) == (60.0,)  # forced wins
    assert cfg.notch_freqs(50.0, 90.0) == ()  # line above the input's Nyquist
