"""``data.train_channels`` / ``data.train_crop``: random real channels and a random crop of a
training batch (trainer.subsample)."""

from __future__ import annotations

import pytest
import torch

from brainomni.train.trainer import subsample


def _batch():
    B, C, T = 3, 10, 64
    x = torch.arange(B * C * T, dtype=torch.float32).view(B, C, T)
    pos = torch.randn(B, C, 6, generator=torch.Generator().manual_seed(0))
    st = torch.arange(B * C).view(B, C) % 3
    mask = torch.ones(B, C, dtype=torch.bool)
    mask[1, 6:] = False  # recording 1 has 6 real channels
    mask[2, 3:] = False  # recording 2 has 3
    keys = ["rec-a/0", "rec-b/0", "rec-c/0"]
    return {"x": x, "pos": pos, "sensor_type": st, "mask": mask, "padded": True, "keys": keys}


def test_subsample_keeps_real_channels_and_rows():
    b = _batch()
    out = subsample(b, 4, 16, seed=(0, 1))
    assert out["x"].shape == (3, 4, 16) and out["mask"].shape == (3, 4)
    assert out["mask"].sum(1).tolist() == [4, 4, 3]
    assert out["padded"] is True and out["keys"] == b["keys"]
    T = b["x"].shape[-1]
    starts = set()
    for r in range(3):
        for k in range(int(out["mask"][r].sum())):
            row = out["x"][r, k]
            c = int(row[0]) // T - r * 10  # x encodes (recording, channel, sample)
            t0 = int(row[0]) % T
            assert b["mask"][r, c]
            assert torch.equal(row, b["x"][r, c, t0 : t0 + 16])
            assert torch.equal(out["pos"][r, k], b["pos"][r, c])
            assert out["sensor_type"][r, k] == b["sensor_type"][r, c]
            starts.add((r, t0))
    assert len({r for r, _ in starts}) == 3 and len(starts) == 3  # one crop per sample


def test_subsample_is_a_function_of_the_seed():
    a = subsample(_batch(), 4, 16, seed=(0, 5))
    b = subsample(_batch(), 4, 16, seed=(0, 5))
    c = subsample(_batch(), 4, 16, seed=(0, 6))
    assert torch.equal(a["x"], b["x"])
    assert not torch.equal(a["x"], c["x"])


def test_subsample_off_or_larger_keeps_everything():
    b = _batch()
    out = subsample(b, 20, 0, seed=(0,))
    assert torch.equal(out["x"], b["x"]) and torch.equal(out["mask"], b["mask"])


def _rows(out: dict, r: int) -> list[list[float]]:
    """The kept (real) rows of sample ``r``."""
    return [out["x"][r, k].tolist() for k in range(int(out["mask"][r].sum()))]


def test_a_samples_draw_does_not_depend_on_its_batch():
    """The same step draws the same channels and crop for a sample whether it comes first,
    last or alone in its micro-batch (a resumed run on another number of ranks splits a
    step's samples differently)."""
    b = _batch()
    whole = subsample(b, 4, 16, seed=(0, 7))
    order = [2, 0, 1]
    shuffled = {k: [v[i] for i in order] if k == "keys" else v for k, v in b.items()}
    for k in ("x", "pos", "sensor_type", "mask"):
        shuffled[k] = b[k][order]
    other = subsample(shuffled, 4, 16, seed=(0, 7))
    for pos_in_other, r in enumerate(order):
        assert _rows(other, pos_in_other) == _rows(whole, r)
        alone = {k: [v[r]] if k == "keys" else v for k, v in b.items()}
        for k in ("x", "pos", "sensor_type", "mask"):
            alone[k] = b[k][r : r + 1]
        assert _rows(subsample(alone, 4, 16, seed=(0, 7)), 0) == _rows(whole, r)


def test_keys_must_match_the_batch():
    b = _batch()
    b["keys"] = ["only-one"]
    with pytest.raises(ValueError, match="3 samples"):
        subsample(b, 4, 16, seed=(0,))
