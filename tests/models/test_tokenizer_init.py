"""``init="sharp"`` and ``phase_weight``: opt-in knobs that make a small tokenizer learn in a
few dozen steps (the demo's), while the defaults stay the official initialisation/objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brainomni.models import BrainTokenizer, TokenizerConfig

SMALL = dict(
    n_filters=4,
    n_dim=16,
    n_neuro=4,
    n_head=2,
    codebook_size=16,
    num_quantizers=2,
    kmeans_iters=2,
    channel_drop_ratio=0.0,
    noise_std=0.0,
)


def _mixture(c: int = 8, t: int = 1024):
    """Channels = random mixtures of 4 sines (3-19 Hz) + a little noise; deterministic."""
    rng = np.random.default_rng(0)
    time = np.arange(t) / 256.0
    src = np.stack(
        [np.sin(2 * np.pi * f * time + ph) for f, ph in [(3, 0), (7, 1), (11, 2), (19, 0.5)]]
    )
    x = (rng.standard_normal((c, 4)) @ src)[None] + 0.1 * rng.standard_normal((1, c, t))
    pos = rng.standard_normal((1, c, 6))
    return (
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(pos, dtype=torch.float32),
        torch.zeros(1, c, dtype=torch.long),
    )


def _np_pcc(rec: np.ndarray, x: np.ndarray, window: int) -> float:
    """Mean Pearson correlation per channel and window, in numpy (independent of losses.py)."""
    a = rec.reshape(-1, window).astype(np.float64)
    b = x.reshape(-1, window).astype(np.float64)
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    return float(np.mean((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))))


def _fit(steps: int, **cfg) -> float:
    x, pos, st = _mixture()
    torch.manual_seed(0)
    tok = BrainTokenizer(**SMALL, **cfg)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    for _ in range(steps):
        tok.train()
        loss = tok(x, pos, st)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    rec = tok.reconstruct(x, pos, st).numpy()
    return _np_pcc(rec, x.numpy(), tok.window_length)


def test_sharp_init_learns_where_official_does_not():
    # measured (this input, 40 Adam steps): official ~0.00, sharp + phase_weight 0.05 ~0.58
    official = _fit(40)
    sharp = _fit(40, init="sharp", phase_weight=0.05)
    assert abs(official) < 0.1
    assert sharp > official + 0.3


def test_defaults_are_official():
    cfg = TokenizerConfig()
    assert cfg.init == "official" and cfg.phase_weight == 0.5
    torch.manual_seed(0)
    tok = BrainTokenizer(**SMALL)
    linears = [m for m in tok.modules() if isinstance(m, nn.Linear)]
    for m in linears:  # normal std 0.02 (truncated at +-2, i.e. not at all), biases 0
        assert m.bias is None or not m.bias.any()
    w = torch.cat([m.weight.detach().flatten() for m in linears])
    assert float(w.std()) == pytest.approx(0.02, rel=0.1)
    assert float(w.abs().max()) < 0.02 * 7
    # SEANet convolutions keep PyTorch's default (non-zero) biases at the official init
    convs = [m for m in tok.encoder.seanet_encoder.modules() if isinstance(m, nn.Conv1d)]
    assert any(m.bias.abs().sum() > 0 for m in convs)


def test_sharp_init_values():
    torch.manual_seed(0)
    tok = BrainTokenizer(**SMALL, init="sharp")
    for seanet in (tok.encoder.seanet_encoder, tok.decoder.seanet_decoder):
        for m in seanet.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                assert not m.bias.any()
    for lin in (tok.encoder.k_proj, tok.decoder.forwardsolution.kv):
        assert float(lin.weight.detach().std()) == pytest.approx(1.0, rel=0.15)
    proj = tok.decoder.forwardsolution.proj.weight  # fan-in: uniform(+-1/sqrt(fan_in))
    assert float(proj.detach().abs().max()) <= 1 / np.sqrt(proj.shape[1]) + 1e-7
    assert float(proj.detach().std()) > 0.1


def test_bad_knobs_rejected():
    with pytest.raises(ValueError, match="init"):
        TokenizerConfig(init="xavier")
    with pytest.raises(ValueError, match="phase_weight"):
        TokenizerConfig(phase_weight=-1.0)
