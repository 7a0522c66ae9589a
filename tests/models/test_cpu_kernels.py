"""The fused bf16 CPU kernels (``brainomni/models/cpu_kernels.c``) against independent
float32/float64 PyTorch computations, forward and backward, and their dropout generator
against a reimplementation of splitmix64 in torch integer arithmetic.

Shapes include the model's (rows of 16 and 160, 32-wide heads) and odd ones (row lengths not
a multiple of 16 or 4, 6- and 10-wide heads), which take the kernels' scalar tails.
"""

from __future__ import annotations

import platform
import shutil

import pytest
import torch
import torch.nn.functional as F

from brainomni.models import cpu_kernels, cpu_ops
from tests.models.plain_reference import GOLDEN, M1, M2, _srl, _u64, reference_draws

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler (cc) on PATH: the kernels cannot build"
)

BF16_ULP = 2**-8  # relative spacing of bf16 values


MARCHES = ["native"] + (["x86-64-v2"] if platform.machine() in ("x86_64", "AMD64") else [])


@pytest.fixture(scope="module", autouse=True, params=MARCHES)
def _built(request, tmp_path_factory):
    """Every test twice: the library built for this CPU (AVX-512 and its bf16 rounding
    instruction here) and for x86-64-v2 (SSE4.2: the integer rounding and narrower vectors
    another CPU gets)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BRAINOMNI_CPU_KERNELS_MARCH", request.param)
    mp.setenv("BRAINOMNI_CACHE_DIR", str(tmp_path_factory.mktemp(request.param)))
    cpu_kernels.kernels.cache_clear()
    assert cpu_kernels.kernels() is not None, "the kernels failed to build (see the warning)"
    yield request.param
    mp.undo()
    cpu_kernels.kernels.cache_clear()


def _close(a: torch.Tensor, ref: torch.Tensor, ulps: float = 2.0, floor: float = 2**-6) -> None:
    """bf16 ``a`` within ``ulps`` bf16 roundings of the float reference, elementwise, plus
    ``floor`` times the reference's largest value (gradients that are differences of
    rounded terms, e.g. the softmax's ``p (g - <g, p>)``, get a larger floor)."""
    a, ref = a.double(), ref.double()
    tol = ulps * BF16_ULP * (ref.abs() + ref.abs().max() * floor)
    bad = (a - ref).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} of {a.numel()} values off, max {(a - ref).abs().max()}"


# ------------------------------------------------------------------ the dropout generator
def test_splitmix64_reference_matches_the_published_sequence():
    """splitmix64 seeded with 1234567 (state += golden, then mix): its first output is
    6457827717110365317, as in Vigna's reference implementation."""
    z = _u64(1234567 + GOLDEN)
    z = (z ^ _srl(z, 30)) * _u64(M1)
    z = (z ^ _srl(z, 27)) * _u64(M2)
    z = z ^ _srl(z, 31)
    assert int(z) & (2**64 - 1) == 6457827717110365317


@pytest.mark.parametrize("L", [160, 16, 20, 7])
def test_softmax_dropout_forward_backward_and_its_mask(monkeypatch, L):
    seed = 0x1234_5678_9ABC_DEF0
    monkeypatch.setattr(cpu_kernels, "draw_seed", lambda: seed)
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(6, 5, L, generator=g) * 3).bfloat16().requires_grad_(True)
    p, alpha = 0.25, 0.7
    y = cpu_ops.SoftmaxDropout.apply(s, p, alpha)
    t = cpu_kernels.threshold(p)
    keep = (reference_draws(seed, s.numel()) >= t).view(s.shape)
    assert torch.equal(y != 0, keep)  # the kernel's mask is the documented generator's
    s32 = s.detach().double().requires_grad_(True)
    ref = (alpha * s32).softmax(-1) * keep / (1 - t / 32768)
    _close(y, ref)
    gy = torch.randn(s.shape, generator=g).bfloat16()
    y.backward(gy)
    ref.backward(gy.double())
    _close(s.grad, s32.grad, ulps=4, floor=0.25)
    # without dropout: the softmax itself
    y0 = cpu_ops.SoftmaxDropout.apply(s.detach(), 0.0, 1.0)
    _close(y0, s.detach().double().softmax(-1))


def test_dropout_rate_and_seeding():
    """P(keep) = 1 - round(p 2^15) / 2^15 within 5 binomial standard deviations; the same
    torch seed gives the same mask, another seed another one."""
    x = torch.zeros(400, 1000, dtype=torch.bfloat16)
    b = torch.ones(1000)
    for p in (0.1, 0.5):
        torch.manual_seed(3)
        y = cpu_ops.BiasDropoutAdd.apply(x, x, b, p)
        t = cpu_kernels.threshold(p)
        pk = 1 - t / 32768
        rate = (y != 0).double().mean().item()
        assert abs(rate - pk) < 5 * (pk * (1 - pk) / y.numel()) ** 0.5
        assert torch.allclose(y[y != 0].float(), torch.tensor(1 / pk), rtol=2**-8)
        torch.manual_seed(3)
        assert torch.equal(cpu_ops.BiasDropoutAdd.apply(x, x, b, p), y)
        assert not torch.equal(cpu_ops.BiasDropoutAdd.apply(x, x, b, p), y)
    with pytest.raises(ValueError, match="dropout p"):
        cpu_kernels.threshold(1.0)


@pytest.mark.parametrize("D", [256, 21])
def test_bias_dropout_add_forward_backward(monkeypatch, D):
    seed = 987654321
    monkeypatch.setattr(cpu_kernels, "draw_seed", lambda: seed)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, D, generator=g).bfloat16().requires_grad_(True)
    f = torch.randn(3, 7, D, generator=g).bfloat16().requires_grad_(True)
    b = torch.randn(D, generator=g).requires_grad_(True)
    y = cpu_ops.BiasDropoutAdd.apply(x, f, b, 0.1)
    t = cpu_kernels.threshold(0.1)
    keep = (reference_draws(seed, x.numel()) >= t).view(x.shape)
    x64, f64, b64 = (v.detach().double().requires_grad_(True) for v in (x, f, b))
    ref = x64 + (f64 + b64) * keep / (1 - t / 32768)
    _close(y, ref)
    gy = torch.randn(x.shape, generator=g).bfloat16()
    y.backward(gy)
    ref.backward(gy.double())
    assert torch.equal(x.grad, gy)
    _close(f.grad, f64.grad)
    torch.testing.assert_close(b.grad.double(), b64.grad, rtol=0.02, atol=0.05)
    y0 = cpu_ops.BiasDropoutAdd.apply(x.detach(), f.detach(), b.detach(), 0.0)
    _close(y0, x64.detach() + f64.detach() + b64.detach())


# ------------------------------------------------------------------ heads, norm, FFN, loss
@pytest.mark.parametrize(
    ("T", "H", "Dh", "rope"),
    [(160, 2, 32, True), (16, 2, 32, False), (5, 3, 10, True), (4, 2, 6, False)],
)
def test_qkv_heads_forward_backward(T, H, Dh, rope):
    """q, k, v = layout(qkv + bias) with RoPE in the halves order, against the formula."""
    g = torch.Generator().manual_seed(2)
    B = 3
    qkv = torch.randn(B, T, 3, H, Dh, generator=g).bfloat16().requires_grad_(True)
    bias = torch.randn(3 * H * Dh, generator=g).requires_grad_(True)
    c = s = None
    if rope:
        ang = torch.rand(T, H, Dh // 2, generator=g) * 6
        c = torch.cat([ang.cos()] * 2, -1).bfloat16()
        s = torch.cat([-ang.sin(), ang.sin()], -1).bfloat16()
    outs = cpu_ops.QKVHeads.apply(qkv, bias, c, s)
    x64 = qkv.detach().double().requires_grad_(True)
    b64 = bias.detach().double().requires_grad_(True)
    v = x64 + b64.view(3, H, Dh)
    refs = []
    for i in range(3):
        u = v[:, :, i]
        if rope and i < 2:
            sw = torch.cat([u[..., Dh // 2 :], u[..., : Dh // 2]], -1)
            u = u * c.double() + sw * s.double()
        refs.append(u.transpose(1, 2))
    gs = [torch.randn(B, H, T, Dh, generator=g).bfloat16() for _ in range(3)]
    for o, r in zip(outs, refs, strict=True):
        assert o.shape == r.shape and o.is_contiguous()
        _close(o, r)
    # backward with k's gradient missing (None) and v's a transposed view
    torch.autograd.backward(
        [outs[0], outs[2]], [gs[0], gs[2].transpose(-1, -2).contiguous().transpose(-1, -2)]
    )
    torch.autograd.backward([refs[0], refs[2]], [gs[0].double(), gs[2].double()])
    _close(qkv.grad, x64.grad, ulps=4)
    torch.testing.assert_close(bias.grad.double(), b64.grad, rtol=0.02, atol=0.05)


def test_interleaved_layout_and_merge_heads():
    """``layout = (B W, S, W)``: the spatial attention's sequences read from and written back
    to (B, S, W) token rows equal the transposed formula; ``MergeHeads`` inverts the heads'
    layout, its backward the reverse."""
    g = torch.Generator().manual_seed(6)
    B, S, W, H, Dh = 2, 5, 7, 2, 32
    qkv = torch.randn(B * S * W, 3, H, Dh, generator=g).bfloat16().requires_grad_(True)
    q, k, v = cpu_ops.QKVHeads.apply(qkv, None, None, None, (B * W, S, W))
    # sequence (b, w), position s is token (b S + s) W + w
    ref = qkv.detach().view(B, S, W, 3, H, Dh).permute(3, 0, 2, 4, 1, 5).reshape(3, B * W, H, S, Dh)
    for i, t in enumerate((q, k, v)):
        assert torch.equal(t, ref[i])
    merged = cpu_ops.MergeHeads.apply(v, W)  # back to (B S W, H Dh) token rows
    assert torch.equal(merged, qkv.detach()[:, 2].reshape(B * S * W, H * Dh))
    gm = torch.randn(merged.shape, generator=g).bfloat16()
    merged.backward(gm)
    assert torch.equal(qkv.grad[:, 2].reshape(-1, H * Dh), gm)
    assert not qkv.grad[:, :2].any()
    seq = torch.arange(S * 3, dtype=torch.float32).view(1, 1, S, 3).expand(1, 1, S, 3)
    assert torch.equal(
        cpu_ops.MergeHeads.apply(seq.bfloat16().contiguous(), 1), seq.bfloat16().view(S, 3)
    )


@pytest.mark.parametrize(("h1", "h2"), [(128, 128), (7, 12)])
def test_residual_cat(h1, h2):
    """x + [a + ba, b + bb]: forward against the formula, gradients (x's passed through, a's
    and b's as views, the biases' as column sums)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 9, h1 + h2, generator=g).bfloat16().requires_grad_(True)
    a = torch.randn(18, h1, generator=g).bfloat16().requires_grad_(True)
    b = torch.randn(18, h2, generator=g).bfloat16().requires_grad_(True)
    ba = torch.randn(h1, generator=g).requires_grad_(True)
    bb = torch.randn(h2, generator=g).requires_grad_(True)
    y = cpu_ops.ResidualCat.apply(x, a, b, ba, bb)
    x64, a64, b64, ba64, bb64 = (
        v.detach().double().requires_grad_(True) for v in (x, a, b, ba, bb)
    )
    ref = x64 + torch.cat([a64 + ba64, b64 + bb64], -1).view(x.shape)
    _close(y, ref)
    gy = torch.randn(x.shape, generator=g).bfloat16()
    y.backward(gy)
    ref.backward(gy.double())
    assert torch.equal(x.grad, gy)
    assert torch.equal(a.grad, gy.view(18, -1)[:, :h1]) and torch.equal(
        b.grad, gy.view(18, -1)[:, h1:]
    )
    torch.testing.assert_close(ba.grad.double(), ba64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(bb.grad.double(), bb64.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("D", [256, 19])
def test_rms_scale_and_residual_form(D):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 9, D, generator=g) * 2).bfloat16().requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    ref = x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + 1e-6)
    y = cpu_ops.RMSScale.apply(x, 1e-6)
    _close(y, ref)
    gy = torch.randn(x.shape, generator=g).bfloat16()
    y.backward(gy)
    ref.backward(gy.double())
    _close(x.grad, x64.grad, ulps=4)
    # residual form: (x, norm(x)); both gradients summed inside the backward
    x.grad = x64.grad = None
    xr, y = cpu_ops.ResidualRMSScale.apply(x, 1e-6)
    assert torch.equal(xr, x)
    gr = torch.randn(x.shape, generator=g).bfloat16()
    torch.autograd.backward([xr, y], [gr, gy])
    ref = x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + 1e-6)
    torch.autograd.backward([x64, ref], [gr.double(), gy.double()])
    _close(x.grad, x64.grad, ulps=4)


@pytest.mark.parametrize("F_", [1024, 37])
def test_bias_selu_in_place_forward_backward(F_):
    g = torch.Generator().manual_seed(4)
    h0 = (torch.randn(2, 6, F_, generator=g) * 3).bfloat16()
    b = torch.randn(F_, generator=g).requires_grad_(True)
    w = torch.randn(F_, F_, generator=g).bfloat16().requires_grad_(True)
    # as in the block: the product's output, changed in place
    h = h0 @ w
    y = cpu_ops.BiasSELU.apply(h, b)
    assert y.data_ptr() == h.data_ptr()
    w64, b64 = w.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    ref = F.selu(h0.double() @ w64 + b64)
    h_ref = (h0.double() @ w64).detach()  # the bf16 product's exact value differs by rounding
    _close(y, F.selu(h_ref.to(torch.bfloat16).double() + b64).detach())
    gy = torch.randn(y.shape, generator=g).bfloat16()
    y.backward(gy)
    ref.backward(gy.double())
    torch.testing.assert_close(
        b.grad.double(), b64.grad, rtol=0.03, atol=0.05 * b64.grad.abs().max()
    )
    assert F.cosine_similarity(w.grad.double().flatten(), w64.grad.flatten(), 0) > 0.999


@pytest.mark.parametrize("K", [512, 13])
def test_cross_entropy_rows(K):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(50, K, generator=g) * 4).bfloat16().requires_grad_(True)
    labels = torch.randint(0, K, (50,), generator=g)
    loss, top = cpu_ops.CrossEntropyRows.apply(logits, labels)
    l64 = logits.detach().double().requires_grad_(True)
    ref = F.cross_entropy(l64, labels, reduction="none")
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(top, logits.detach().float().argmax(-1))
    loss.mean().backward()
    ref.mean().backward()
    _close(logits.grad, l64.grad, ulps=2)
    bad = labels.clone()
    bad[3] = K
    with pytest.raises(ValueError, match="out of bounds"):
        cpu_ops.CrossEntropyRows.apply(logits.detach(), bad)


# ------------------------------------------------------------------ build and fallback
def test_build_failure_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    """No usable compiler: ``kernels()`` is None (one warning naming the fix) and the bf16
    block still runs, on the PyTorch ops."""
    from brainomni.models.layers import CrissCrossBlock

    monkeypatch.setenv("BRAINOMNI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    cpu_kernels.kernels.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert cpu_kernels.kernels() is None and not cpu_kernels.available()
        assert "C compiler" in caplog.text
        block = CrissCrossBlock(32, 4, 0.1).train()
        with torch.autocast("cpu", torch.bfloat16):
            y = block(torch.randn(2, 3, 8, 32).bfloat16())
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    finally:
        cpu_kernels.kernels.cache_clear()
    monkeypatch.setenv("BRAINOMNI_CPU_KERNELS", "0")
    assert cpu_kernels.kernels() is None
    cpu_kernels.kernels.cache_clear()


def test_cached_library_is_reused(tmp_path, monkeypatch):
    """The build goes to the cache directory, named by the CPU model and the source hash,
    replacing this model's older builds (not other models'); a second build finds it; no
    temporaries are left."""
    monkeypatch.delenv("BRAINOMNI_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tag = cpu_kernels._cpu_tag()
    stale = tmp_path / "brainomni" / "cpu-kernels" / f"cpu_kernels-{tag}-0000000000000000.so"
    other_cpu = stale.with_name("cpu_kernels-00000000-0000000000000000.so")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older build")
    other_cpu.write_bytes(b"another CPU model's build")
    first = cpu_kernels._build()
    assert first.parent == stale.parent and first.exists() and not stale.exists()
    assert other_cpu.exists()  # left to the CPU model it was built for
    mtime = first.stat().st_mtime_ns
    assert cpu_kernels._build() == first and first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, other_cpu.name])
