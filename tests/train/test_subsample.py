"""``data.train_channels`` / ``data.train_crop``: random real channels and a random crop of a
training batch (trainer.subsample)."""

from __future__ import annotations

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
    return {"x": x, "pos": pos, "sensor_type": st, "mask": mask, "padded": True, "keys": ["k"]}


def test_subsample_keeps_real_channels_and_rows():
    b = _batch()
    out = subsample(b, 4, 16, seed=(0, 0, 1, 0))
    assert out["x"].shape == (3, 4, 16) and out["mask"].shape == (3, 4)
    assert out["mask"].sum(1).tolist() == [4, 4, 3]
    assert out["padded"] is True and out["keys"] == ["k"]
    T = b["x"].shape[-1]
    for r in range(3):
        for k in range(int(out["mask"][r].sum())):
            row = out["x"][r, k]
            c = int(row[0]) // T - r * 10  # x encodes (recording, channel, sample)
            t0 = int(row[0]) % T
            assert b["mask"][r, c]
            assert torch.equal(row, b["x"][r, c, t0 : t0 + 16])
            assert torch.equal(out["pos"][r, k], b["pos"][r, c])
            assert out["sensor_type"][r, k] == b["sensor_type"][r, c]


def test_subsample_is_a_function_of_the_seed():
    a = subsample(_batch(), 4, 16, seed=(0, 0, 5, 1))
    b = subsample(_batch(), 4, 16, seed=(0, 0, 5, 1))
    c = subsample(_batch(), 4, 16, seed=(0, 0, 6, 1))
    assert torch.equal(a["x"], b["x"])
    assert not torch.equal(a["x"], c["x"])


def test_subsample_off_or_larger_keeps_everything():
    b = _batch()
    out = subsample(b, 20, 0, seed=(0,))
    assert torch.equal(out["x"], b["x"]) and torch.equal(out["mask"], b["mask"])
