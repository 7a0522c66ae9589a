"""BrainTokenizer: shapes for any layout, padding, permutation, losses, corruption."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from brainomni.models import BrainOmni, BrainTokenizer
from brainomni.models.losses import reconstruction_losses, total_loss, zscore
from brainomni.models.tokenizer import _drop_channels

from .codes import DIST_SLACK, assert_codes_equal_where_clear, clear, moved, rvq_walk


@pytest.fixture(scope="module")
def tokenizer() -> BrainTokenizer:
    torch.manual_seed(0)
    tok = BrainTokenizer().eval()
    # k-means initialisation of the codebooks: 1024 latents for 512 codes, so that every
    # RVQ layer gets distinct codes (with as many latents as codes the first layer takes
    # them all and the residual layers collapse onto one code: every choice a tie)
    x, pos, st = _inputs(2, 32, 4096, seed=1)
    tok.tokenize(x, pos, st)
    return tok


def _inputs(b: int, c: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, t, generator=g),
        torch.randn(b, c, 6, generator=g),
        torch.randint(0, 3, (b, c), generator=g),
    )


def test_parameter_counts():
    tok = BrainTokenizer()
    assert sum(p.numel() for p in tok.parameters() if p.requires_grad) == 5_050_338
    assert BrainOmni("tiny", tokenizer=tok).trainable_parameters() == 8_424_704
    assert BrainOmni("base", tokenizer=tok).trainable_parameters() == 32_707_328
    assert not any(p.requires_grad for p in tok.parameters())  # frozen in place


@pytest.mark.parametrize("n_channels", [1, 19, 64, 306, 372])
def test_shapes_any_layout(tokenizer, n_channels):
    x, pos, st = _inputs(1, n_channels, 1024)
    feats, idx = tokenizer.tokenize(x, pos, st)
    assert feats.shape == (1, 16, 16, 256) and idx.shape == (1, 16, 16, 4)
    assert idx.min() >= 0 and idx.max() < 512
    rec = tokenizer.reconstruct(x, pos, st)
    assert rec.shape == (1, n_channels, 1024) and torch.isfinite(rec).all()


def test_training_forward_single_channel_and_backward():
    torch.manual_seed(0)
    tok = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16).train()
    x, pos, st = _inputs(2, 1, 512)
    out = tok(x, pos, st)  # one channel: the corruption never hides every channel
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert tok.encoder.k_proj.weight.grad.abs().sum() > 0


def test_padded_mixed_batch_equals_each_alone(tokenizer):
    counts = [5, 19, 12]
    singles = [_inputs(1, c, 1024, seed=10 + i) for i, c in enumerate(counts)]
    C = max(counts)
    x = torch.zeros(3, C, 1024)
    pos = torch.zeros(3, C, 6)
    st = torch.zeros(3, C, dtype=torch.long)
    mask = torch.zeros(3, C, dtype=torch.bool)
    for i, (xi, pi, si) in enumerate(singles):
        c = counts[i]
        x[i, :c], pos[i, :c], st[i, :c], mask[i, :c] = xi[0], pi[0], si[0], True
    feats, idx = tokenizer.tokenize(x, pos, st, mask)
    z = tokenizer.encode(x, pos, st, mask)
    rec = tokenizer.decode(feats, pos, st, mask)
    books = tokenizer.quantizer.codebooks
    for i, (xi, pi, si) in enumerate(singles):
        f1, i1 = tokenizer.tokenize(xi, pi, si)
        z1 = tokenizer.encode(xi, pi, si)
        torch.testing.assert_close(z[i : i + 1], z1, atol=1e-5, rtol=1e-4)
        # indices: equal where the nearest code wins by more than the latents moved
        _, margin = rvq_walk(books, z1)
        decided = clear(margin, 2 * moved(z[i : i + 1], z1) + DIST_SLACK)
        assert_codes_equal_where_clear(idx[i : i + 1], i1, decided, min_fraction=0.5)
        every = decided.all(-1)[0]
        torch.testing.assert_close(feats[i][every], f1[0][every], atol=1e-5, rtol=1e-4)
        # decoding the same features alone or in the padded batch
        r1 = tokenizer.decode(feats[i : i + 1], pi, si)
        torch.testing.assert_close(rec[i, : counts[i]], r1[0], atol=1e-4, rtol=1e-4)
        assert (rec[i, counts[i] :] == 0).all()


def test_sensor_permutation(tokenizer):
    """Permuting the channels leaves the sources unchanged and permutes the reconstruction:
    latents within float32 tolerance, indices where the nearest code is decided."""
    x, pos, st = _inputs(2, 24, 1024, seed=3)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    xp, pp, sp = x[:, perm], pos[:, perm], st[:, perm]
    z0, z1 = tokenizer.encode(x, pos, st), tokenizer.encode(xp, pp, sp)
    torch.testing.assert_close(z0, z1, atol=1e-5, rtol=1e-4)
    f0, i0 = tokenizer.tokenize(x, pos, st)
    f1, i1 = tokenizer.tokenize(xp, pp, sp)
    ref, margin = rvq_walk(tokenizer.quantizer.codebooks, z0)
    decided = clear(margin, 2 * moved(z0, z1) + DIST_SLACK)
    assert_codes_equal_where_clear(i0, i1, decided, min_fraction=0.5)
    assert_codes_equal_where_clear(i0, ref, decided, min_fraction=0.5)  # nearest code
    every = decided.all(-1)
    torch.testing.assert_close(f0[every], f1[every], atol=1e-5, rtol=1e-4)
    # the decoder: the same quantised sources, sensors in either order
    r0 = tokenizer.decode(f0, pos, st)
    r1 = tokenizer.decode(f0, pp, sp)
    torch.testing.assert_close(r0[:, perm], r1, atol=1e-4, rtol=1e-4)


def test_sensor_permutation_float64(tokenizer):
    """The same equivariance in float64, where it holds to rounding (1e-12)."""
    tok = copy.deepcopy(tokenizer).double()
    x, pos, st = _inputs(2, 24, 1024, seed=3)
    x, pos = x.double(), pos.double()
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    xp, pp, sp = x[:, perm], pos[:, perm], st[:, perm]
    with torch.no_grad():
        z0, z1 = tok.encode(x, pos, st), tok.encode(xp, pp, sp)
    assert z0.dtype == torch.float64
    torch.testing.assert_close(z0, z1, atol=1e-12, rtol=1e-10)
    books = tok.quantizer.codebooks.double()
    i0, margin = rvq_walk(books, z0)
    i1, _ = rvq_walk(books, z1)
    decided = clear(margin, 2 * moved(z0, z1) + 1e-12)
    assert_codes_equal_where_clear(i0, i1, decided, min_fraction=0.9)
    q_idx = torch.arange(books.shape[0])
    feats = books[q_idx, i0].sum(-2)
    with torch.no_grad():  # the decoder itself (``decode`` returns float32)
        r0 = tok.decoder(feats, tok.embed_sensors(pos, st), None).reshape(2, 24, -1)
        r1 = tok.decoder(feats, tok.embed_sensors(pp, sp), None).reshape(2, 24, -1)
    assert r0.dtype == torch.float64
    torch.testing.assert_close(r0[:, perm], r1, atol=1e-10, rtol=1e-9)


def _np_losses(rec: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    L = rec.shape[-1]
    win = np.hamming(L + 1)[:-1]  # periodic Hamming window (torch default)
    fr = np.fft.rfft(rec * win, norm="ortho")
    ft = np.fft.rfft(tgt * win, norm="ortho")
    pccs = []
    for a, b in zip(rec.reshape(-1, L), tgt.reshape(-1, L), strict=True):
        cov = ((a - a.mean()) * (b - b.mean())).sum() / (L - 1)
        pccs.append(cov / (a.std(ddof=1) * b.std(ddof=1) + 1e-6))
    return {
        "time_loss": np.abs(rec - tgt).mean(),
        "pcc": float(np.mean(pccs)),
        "amp_loss": np.abs(np.abs(fr) - np.abs(ft)).mean(),
        "phase_loss": np.abs(np.angle(fr) - np.angle(ft)).mean(),
    }


def test_losses_equal_hand_computed():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 3, 2, 16, generator=g, dtype=torch.float64) * 3 + 1
    rec = torch.randn(2, 3, 2, 16, generator=g, dtype=torch.float64)
    tgt = zscore(raw)
    r = raw.numpy()
    tgt_np = (r - r.mean(-1, keepdims=True)) / (r.std(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(tgt.numpy(), tgt_np, rtol=1e-5, atol=1e-6)
    parts = reconstruction_losses(rec, tgt)
    expect = _np_losses(rec.numpy(), tgt_np)
    for k, v in expect.items():
        assert parts[k].item() == pytest.approx(float(v), rel=1e-4, abs=1e-5), k
    commit = torch.tensor(0.125)
    want = (
        expect["time_loss"]
        + math.exp(-expect["pcc"])
        + 0.125
        + expect["amp_loss"]
        + 0.5 * expect["phase_loss"]
    )
    assert total_loss(parts, commit).item() == pytest.approx(want, rel=1e-4)


def test_forward_loss_is_the_official_sum_and_commitment_by_hand():
    torch.manual_seed(0)
    tok = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16).eval()
    x, pos, st = _inputs(2, 6, 1024)
    out = tok(x, pos, st)  # eval: no corruption
    want = (
        out["time_loss"]
        + torch.exp(-out["pcc"])
        + out["commitment_loss"]
        + out["amp_loss"]
        + 0.5 * out["phase_loss"]
    )
    torch.testing.assert_close(out["loss"], want)
    # commitment = mean over layers of 0.25 * MSE(residual, selected code)
    z = torch.nn.functional.normalize(tok.encode(x, pos, st), dim=-1)
    _, idx = tok.tokenize(x, pos, st)
    books, residual, per_layer = tok.quantizer.codebooks, z, []
    for q in range(books.shape[0]):
        code = books[q][idx[..., q]]
        per_layer.append(0.25 * ((residual - code) ** 2).mean())
        residual = residual - code
    torch.testing.assert_close(out["commitment_loss"], torch.stack(per_layer).mean())
    # the quantised feature is the sum of the selected codes
    feats, _ = tok.tokenize(x, pos, st)
    torch.testing.assert_close(feats, tok.quantizer.lookup(idx), atol=1e-6, rtol=1e-5)


def test_channel_drop_counts():
    torch.manual_seed(0)
    mask = torch.zeros(4, 40, dtype=torch.bool)
    for i, c in enumerate([1, 2, 19, 40]):
        mask[i, :c] = True
    for _ in range(5):
        enc = _drop_channels(mask, mask.shape, 0.25, mask.device)
        assert not (enc & ~mask).any()
        assert enc.sum(1).tolist() == [1, 1, 19 - 4, 40 - 10]


def test_bf16_autocast():
    torch.manual_seed(0)
    tok = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16).train()
    x, pos, st = _inputs(2, 5, 1024)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tok(x, pos, st)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert out["loss"].dtype == torch.float32


def _reference_seanet(layers, x):
    """The plain EnCodec computation (ELU, reflect pad + conv, conv-transpose + trim) on the
    same modules, to check the fused fast paths of ``seanet.py`` against."""
    import torch.nn.functional as F

    from brainomni.models.seanet import ResnetBlock, SConv1d, SConvTranspose1d, _reflect_pad

    for m in layers:
        if isinstance(m, torch.nn.ELU):
            x = F.elu(x)
        elif isinstance(m, SConv1d):
            conv = m.conv.conv
            k, s, d = m.kernel_size, m.stride, m.dilation
            total = (k - 1) * d - (s - 1)
            n_frames = (x.shape[-1] - k + total) / s + 1
            extra = (math.ceil(n_frames) - 1) * s + (k - total) - x.shape[-1]
            right = total // 2
            x = F.conv1d(
                _reflect_pad(x, total - right, right + extra), conv.weight, conv.bias, s, 0, d
            )
        elif isinstance(m, SConvTranspose1d):
            tr = m.convtr.convtr
            y = F.conv_transpose1d(x, tr.weight, tr.bias, m.stride)
            total = m.kernel_size - m.stride
            x = y[..., total - total // 2 : y.shape[-1] - total // 2]
        elif isinstance(m, ResnetBlock):
            x = _reference_seanet([m.shortcut], x) + _reference_seanet(m.block, x)
        else:
            x = m(x)
    return x


@pytest.mark.parametrize("length", [512, 1024, 8])
def test_seanet_fast_paths_equal_plain_computation(length):
    from brainomni.models.seanet import SEANetDecoder, SEANetEncoder

    torch.manual_seed(0)
    for net, shape in (
        (SEANetEncoder(32, n_filters=8), (3, 1, length)),
        (SEANetDecoder(32, n_filters=8), (3, 32, max(length // 64, 1))),
    ):
        net = net.double()
        x = torch.randn(*shape, dtype=torch.double)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1 = net(x1)
        g = torch.randn_like(y1)
        grads1 = torch.autograd.grad(y1, [x1, *net.parameters()], g)
        y2 = _reference_seanet(net.model, x2)
        grads2 = torch.autograd.grad(y2, [x2, *net.parameters()], g)
        torch.testing.assert_close(y1, y2, atol=1e-12, rtol=1e-10)
        for a, b in zip(grads1, grads2, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs, and in bf16 like the reference
        y = SEANetEncoder(32, n_filters=8)(torch.randn(2, 1, 512))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
