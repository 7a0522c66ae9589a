"""Our fast paths compute the plain formulation's function (tests/models/plain_reference.py).

float32 paths: losses, gradients and latents equal within float tolerance. bf16 autocast
(``precision="bf16"``): continuous outputs within a stated bf16 tolerance. Codebook indices
are compared only where the nearest code wins by a clear margin (a near tie may flip under
another summation order; that is not an error).
"""

from __future__ import annotations

import pytest
import torch

from brainomni.models import BrainOmni, BrainOmniConfig, BrainTokenizer, TokenizerConfig
from brainomni.models.losses import reconstruction_losses, zscore
from brainomni.models.seanet import SConv1d, SConvTranspose1d, SEANetDecoder, SEANetEncoder
from brainomni.models.speed import autocast, native_bf16, resolved_precision
from tests.models.plain_reference import SEANetDecoder as PlainDecoder
from tests.models.plain_reference import SEANetEncoder as PlainEncoder
from tests.models.plain_reference import copy_weights, plain_omni, plain_tokenizer

TOK = {"n_filters": 4, "n_dim": 32, "n_head": 2, "codebook_size": 16, "kmeans_iters": 2}
OMNI = {"lm_dim": 32, "lm_head": 4, "lm_depth": 2, "lm_dropout": 0.0}

# bf16 keeps 8 significant bits (relative step 2^-8 = 0.4 %); through ~20 layers the errors
# add up to a few percent of an output's scale. Stated tolerance for continuous outputs:
BF16_REL = 0.05  # max |ours_bf16 - plain_fp32| <= 5 % of max |plain_fp32|
BF16_GRAD_COS = 0.99  # cosine similarity of the whole gradient vectors


def _inputs(b: int, c: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, t, generator=g)
    pos = torch.randn(b, c, 6, generator=g)
    st = torch.randint(0, 3, (b, c), generator=g)
    mask = torch.ones(b, c, dtype=torch.bool)
    mask[0, c - 2 :] = False  # a padded recording: exercises the key mask
    return x, pos, st, mask


@pytest.fixture(scope="module")
def pair() -> tuple[BrainTokenizer, BrainTokenizer]:
    """(ours, plain) with the same weights and k-means-initialised codebooks."""
    torch.manual_seed(0)
    ours = BrainTokenizer(**TOK).eval()
    x, pos, st, mask = _inputs(2, 6, 1024, seed=1)
    ours.tokenize(x, pos, st, mask)  # k-means init
    plain = plain_tokenizer(**TOK).eval()
    copy_weights(plain, ours)
    return ours, plain


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(model, **inputs) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out["loss"].backward()
    return {k: v.detach() for k, v in out.items()}, _grads(model)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def _flat_cos(ga: dict, gb: dict) -> float:
    a = torch.cat([ga[k].flatten().float() for k in sorted(gb)])
    b = torch.cat([gb[k].flatten().float() for k in sorted(gb)])
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def clear_margin(z_BSWD: torch.Tensor, books_QKD: torch.Tensor, margin: float):
    """Indices (B, S, W, Q) of the residual VQ on the L2-normalised ``z`` and a mask of the
    entries whose nearest code beats the second by more than ``margin`` in distance, at
    every layer up to that one (a later layer's residual depends on the earlier choices)."""
    res = torch.nn.functional.normalize(z_BSWD.float(), dim=-1)
    idx, clear = [], torch.ones(z_BSWD.shape[:-1], dtype=torch.bool)
    for book in books_QKD:
        d = torch.cdist(res.reshape(-1, res.shape[-1]), book).view(*res.shape[:-1], -1)
        two = d.topk(2, dim=-1, largest=False)
        clear = clear & ((two.values[..., 1] - two.values[..., 0]) > margin)
        idx.append(two.indices[..., 0])
        res = res - book[two.indices[..., 0]]
    return torch.stack(idx, -1), clear


def _codec_step(model, x, pos, st, mask) -> tuple[torch.Tensor, dict]:
    """Encode -> decode (no RVQ: its nearest-code choice is discontinuous, so a near tie could
    flip under another summation order) -> reconstruction losses, and their gradients."""
    model.zero_grad(set_to_none=True)
    rec = model.decode(model.encode(x, pos, st, mask), pos, st, mask)
    parts = reconstruction_losses(rec[mask], zscore(x[mask]))
    loss = parts["time_loss"] + parts["amp_loss"] + torch.exp(-parts["pcc"])
    loss.backward()
    return rec.detach(), _grads(model)


def test_tokenizer_fp32_equals_plain(pair):
    """Every fast path of the tokenizer (SEANet, both attentions, sensor module), forward and
    backward, against the plain formulation."""
    ours, plain = pair
    x, pos, st, mask = _inputs(2, 6, 1024, seed=2)
    rec_a, a_grad = _codec_step(ours, x, pos, st, mask)
    rec_b, b_grad = _codec_step(plain, x, pos, st, mask)
    torch.testing.assert_close(rec_a, rec_b, rtol=1e-4, atol=1e-5)
    assert a_grad.keys() == b_grad.keys() and len(b_grad) > 40
    for k in b_grad:
        torch.testing.assert_close(a_grad[k], b_grad[k], rtol=1e-3, atol=1e-5, msg=k)
    with torch.no_grad():
        za, zb = ours.encode(x, pos, st, mask), plain.encode(x, pos, st, mask)
    torch.testing.assert_close(za, zb, rtol=1e-4, atol=1e-5)


def test_tokenizer_indices_equal_where_clear(pair):
    ours, plain = pair
    x, pos, st, mask = _inputs(2, 6, 1024, seed=4)
    _, idx = ours.tokenize(x, pos, st, mask)
    with torch.no_grad():
        ref, clear = clear_margin(plain.encode(x, pos, st, mask), ours.quantizer.codebooks, 1e-4)
    assert clear.float().mean() > 0.5  # the comparison covers most positions (all Q layers)
    assert torch.equal(idx[clear], ref[clear])


needs_bf16 = pytest.mark.skipif(
    not native_bf16("cpu"), reason="this CPU has neither AMX-BF16 nor AVX512-BF16"
)


@needs_bf16
def test_tokenizer_bf16_within_tolerance(pair):
    ours, plain = pair
    fast = BrainTokenizer(**TOK, precision="bf16").eval()
    copy_weights(fast, ours)
    x, pos, st, mask = _inputs(2, 6, 1024, seed=5)
    a_out, a_grad = _step(fast, x=x, pos=pos, sensor_type=st, mask=mask, corrupt=False)
    b_out, b_grad = _step(plain, x=x, pos=pos, sensor_type=st, mask=mask, corrupt=False)
    assert all(v.dtype == torch.float32 for v in a_out.values())
    for k in ("loss", "time_loss", "amp_loss", "pcc"):
        assert abs(a_out[k] - b_out[k]) <= BF16_REL * max(1.0, abs(b_out[k])), k
    # no gradient comparison here: bf16 latents may pick another nearest code at near ties,
    # which changes the decoder's input discontinuously (BrainOmni's gradients are compared)
    assert a_grad.keys() == b_grad.keys()
    assert all(torch.isfinite(g).all() for g in a_grad.values())
    with torch.no_grad():
        zb = plain.encode(x, pos, st, mask)
        rec_b = plain.decode(zb, pos, st, mask)
        with autocast("bf16", "cpu"):
            z = fast.encode(x, pos, st, mask)
            rec = fast.decode(zb, pos, st, mask)
    assert z.dtype == torch.bfloat16  # the fast path really ran in bf16
    # z is an attention average of random-init features that nearly cancel: its bf16
    # error is measured against the scale of the encoder's SEANet output, not of z itself
    seanet_scale = plain.encoder.seanet_encoder(x[:, :, :512].reshape(-1, 1, 512)).abs().max()
    assert (z.float() - zb).abs().max() <= BF16_REL * seanet_scale
    assert _rel_err(rec, rec_b) <= BF16_REL


@pytest.fixture(scope="module")
def omni_pair(pair):
    ours_tok = pair[0]
    torch.manual_seed(0)
    ours = BrainOmni("tiny", tokenizer=ours_tok, **OMNI).train()
    plain = plain_omni("tiny", tokenizer=ours_tok, **OMNI).train()
    copy_weights(plain, ours)
    x, pos, st, _ = _inputs(2, 5, 6, seed=6)
    _, idx = ours.tokens(torch.randn(2, 5, 6 * 256), pos, st)
    return ours, plain, idx


def test_omni_fp32_equals_plain(omni_pair):
    ours, plain, idx = omni_pair
    a_out, a_grad = _step(ours, indices=idx, generator=torch.Generator().manual_seed(1))
    b_out, b_grad = _step(plain, indices=idx, generator=torch.Generator().manual_seed(1))
    # the loss only: acc_* are argmax counts (discontinuous)
    torch.testing.assert_close(a_out["loss"], b_out["loss"], rtol=1e-4, atol=1e-5)
    assert a_grad.keys() == b_grad.keys() and len(b_grad) > 20
    for k in b_grad:
        torch.testing.assert_close(a_grad[k], b_grad[k], rtol=1e-3, atol=1e-6, msg=k)
    torch.testing.assert_close(ours.encode(indices=idx), plain.encode(indices=idx))


@needs_bf16
@pytest.mark.parametrize("kernels", [True, False], ids=["c-kernels", "torch-ops"])
def test_omni_bf16_within_tolerance(omni_pair, kernels, monkeypatch):
    from brainomni.models import cpu_kernels

    if kernels and not cpu_kernels.available():
        pytest.skip("the C kernels did not build here (no C compiler)")
    monkeypatch.setattr(cpu_kernels, "available", lambda: kernels)
    ours, plain, idx = omni_pair
    fast = BrainOmni("tiny", tokenizer=ours.tokenizer, **OMNI, precision="bf16").train()
    copy_weights(fast, ours)
    seen = []
    hook = fast.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    a_out, a_grad = _step(fast, indices=idx, generator=torch.Generator().manual_seed(2))
    hook.remove()
    assert seen == [torch.bfloat16]  # the bf16 residual stream: the blocks' bf16 CPU path ran
    b_out, b_grad = _step(plain, indices=idx, generator=torch.Generator().manual_seed(2))
    assert a_out["loss"].dtype == torch.float32
    assert abs(a_out["loss"] - b_out["loss"]) <= BF16_REL * abs(b_out["loss"])
    assert _flat_cos(a_grad, b_grad) >= BF16_GRAD_COS
    with torch.no_grad(), autocast("bf16", "cpu"):
        h = fast.encode(indices=idx)
    assert _rel_err(h, plain.encode(indices=idx)) <= BF16_REL


def test_speed_options_validated_and_resolved():
    with pytest.raises(ValueError, match="precision='fp16'"):
        TokenizerConfig(precision="fp16")
    with pytest.raises(ValueError, match="compile='yes'"):
        BrainOmniConfig(compile="yes")
    assert resolved_precision("fp32", "cpu") == "fp32"
    assert resolved_precision("bf16", "cpu") == "bf16"
    assert resolved_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert BrainTokenizer(**TOK).config_dict()["precision"] == "fp32"  # safe default
    with pytest.raises(ValueError, match="float32"):
        plain_tokenizer(**TOK, precision="bf16")


@needs_bf16
@pytest.mark.parametrize(
    "layer",
    [
        lambda: SConv1d(16, 32, 8, stride=4),  # wrong in oneDNN bf16 without the guard
        lambda: SConv1d(8, 1, 8),
        lambda: SConvTranspose1d(32, 16, 8, 4),
        lambda: SConv1d(32, 64, 8, stride=4),  # bf16 kernels
        lambda: SConvTranspose1d(64, 32, 8, 4),
    ],
)
def test_bf16_convolutions_within_tolerance(layer):
    """Shapes where oneDNN's bf16 convolution is wrong run in float32 (seanet._bf16_unsafe);
    forward and gradients match float32 within the bf16 tolerance either way."""
    torch.manual_seed(0)
    m = layer()
    inner = m.convtr.convtr if isinstance(m, SConvTranspose1d) else m.conv.conv
    x = torch.randn(3, inner.in_channels, 40)
    x.requires_grad_(True)
    ref = m(x)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *m.parameters()])
    with autocast("bf16", "cpu"):
        out = m(x)
    g = torch.autograd.grad(out.float().square().sum(), [x, *m.parameters()])
    assert _rel_err(out, ref) <= BF16_REL
    for a, b in zip(g, g_ref, strict=True):
        assert _rel_err(a, b) <= BF16_REL


@needs_bf16
def test_paper_seanet_bf16_within_tolerance():
    """The paper's SEANet widths (bf16 convolutions and LSTM) against the plain float32 ones."""
    torch.manual_seed(0)
    enc, dec = SEANetEncoder(), SEANetDecoder()
    penc, pdec = PlainEncoder(256, 32, (8, 4, 2), 5, 5), PlainDecoder(256, 32, (8, 4, 2), 5, 5)
    copy_weights(penc, enc), copy_weights(pdec, dec)
    x = torch.randn(4, 1, 512)
    with torch.no_grad():
        z_ref, y_ref = penc(x), pdec(penc(x))
        with autocast("bf16", "cpu"):
            z = enc(x)
            y = dec(z_ref)
    assert z.dtype == torch.bfloat16
    assert _rel_err(z, z_ref) <= BF16_REL and _rel_err(y, y_ref) <= BF16_REL


# --------------------------------------------------------------------------- bf16 CPU block path


def test_bf16_path_ops_have_exact_backwards():
    """The hand-written backwards of the bf16 path's RMSNorm, q/k/v layout + RoPE and
    short-row softmax ops against numerical derivatives (float64: the ops are
    dtype-generic)."""
    from brainomni.models.bf16_cpu import _QKVHeads, _ShortSoftmax, rms_scale

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 16, dtype=torch.float64, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: rms_scale(t, 1e-6), (x,))
    qkv = torch.randn(2, 5, 3, 2, 8, dtype=torch.float64, generator=g).requires_grad_(True)
    ang = torch.randn(5, 2, 4, dtype=torch.float64, generator=g)
    c, s = torch.cat([ang.cos()] * 2, -1), torch.cat([-ang.sin(), ang.sin()], -1)
    assert torch.autograd.gradcheck(lambda t: _QKVHeads.apply(t, c, s), (qkv,))
    assert torch.autograd.gradcheck(lambda t: _QKVHeads.apply(t, None, None), (qkv,))
    s_ = torch.randn(3, 4, 16, dtype=torch.float64, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(_ShortSoftmax.apply, (s_,))
    torch.testing.assert_close(_ShortSoftmax.apply(s_), s_.softmax(-1))
    q, k, v = _QKVHeads.apply(qkv, None, None)  # without RoPE: the heads' layout only
    for i, t in enumerate((q, k, v)):
        assert t.is_contiguous() and torch.equal(t, qkv[:, :, i].transpose(1, 2))


def test_rope_halves_equal_the_complex_product():
    """The bf16 path's RoPE (q/k rows in ``halves_order``, ``_QKVHeads`` with
    ``halves_tables``) equals the official complex RoPE on the original feature order, and
    the reorder leaves the attention scores q . k unchanged."""
    from brainomni.models.bf16_cpu import _QKVHeads, halves_order, halves_tables
    from brainomni.models.layers import rope_angles, rope_tables
    from tests.models.plain_reference import rope_rotation

    T, dim, H = 7, 16, 2
    qkv = torch.randn(3, T, 3, H, dim // H, dtype=torch.float64)
    perm = halves_order(dim, H)
    reordered = qkv.flatten(2)[..., perm].view_as(qkv)
    assert torch.equal(reordered[:, :, 2], qkv[:, :, 2])  # v keeps its order
    cos, sin = rope_tables(rope_angles(T, dim, H, 10000.0, "cpu"))
    q, k, v = _QKVHeads.apply(reordered.bfloat16(), *halves_tables(cos, sin))
    ours = torch.stack([q, k], 2).transpose(1, 3).double()  # (B, T, 2, H, Dh)
    assert torch.equal(v, qkv[:, :, 2].transpose(1, 2).bfloat16())
    rot = rope_rotation(T, dim, H, 10000.0).to(torch.complex128).unsqueeze(1)
    ref = torch.view_as_real(torch.view_as_complex(qkv[:, :, :2].reshape(3, T, 2, H, -1, 2)) * rot)
    ref = ref.flatten(-2).flatten(2)[..., perm[: 2 * dim]].view_as(ours)
    torch.testing.assert_close(ours, ref, rtol=0.02, atol=0.02)  # bf16 inputs and tables
    scores = torch.einsum("bthd,bshd->bhts", *ours.unbind(2))
    ref_scores = torch.einsum("bthd,bshd->bhts", *ref.unbind(2))
    torch.testing.assert_close(scores, ref_scores, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_bits_rate_scale_and_seeding(p):
    from brainomni.models.bf16_cpu import keep_bits

    torch.manual_seed(7)
    a, scale = keep_bits((400, 500), p, "cpu")
    torch.manual_seed(7)
    b, _ = keep_bits((400, 500), p, "cpu")
    assert a.dtype == torch.int16 and set(a.unique().tolist()) == {-1, 0}
    kept = (a == -1).float().mean().item()
    sigma = (p * (1 - p) / a.numel()) ** 0.5
    assert abs(kept - (1 - p)) < 5 * sigma  # Bernoulli(1 - p)
    assert abs(scale * (1 - p) - 1) <= 2**-15 / (1 - p)  # 1 / P(keep), P(keep) ~ 1 - p
    assert torch.equal(a, b)  # drawn from the default generator
    assert not torch.equal(a, keep_bits((400, 500), p, "cpu")[0])
    with pytest.raises(ValueError, match="dropout p"):
        keep_bits((4,), 1.0, "cpu")


def test_drop_bits_is_a_mask_forward_and_backward():
    """``drop_bits`` keeps x exactly where kept and gives 0 elsewhere; its gradient is the
    same mask on the incoming gradient (as autograd's multiply by a 0/1 mask)."""
    from brainomni.models.bf16_cpu import drop_bits

    x = torch.randn(50, 60).bfloat16().requires_grad_(True)
    torch.manual_seed(3)
    y, scale = drop_bits(x, 0.3)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.8 and abs(scale - 1 / 0.7) < 1e-3
    assert torch.equal(y[kept], x.detach()[kept])
    g = torch.randn(50, 60).bfloat16()
    y.backward(g)
    torch.testing.assert_close(x.grad, g * kept, rtol=0, atol=0)


@pytest.mark.parametrize("kernels", [True, False], ids=["c-kernels", "torch-ops"])
@pytest.mark.parametrize("T", [20, 40])  # the short-row softmax (<= 32) and the native one
def test_attention_dropout_bf16_equals_the_formula_with_its_mask(T, kernels, monkeypatch):
    """Both bf16 attention paths (the C kernel's softmax + dropout, or PyTorch ops with
    ``keep_bits``) against the formula with the mask each path draws."""
    from brainomni.models import cpu_kernels
    from brainomni.models.bf16_cpu import attention_dropout_bf16, keep_bits
    from tests.models.plain_reference import reference_draws

    if kernels and not cpu_kernels.available():
        pytest.skip("the C kernels did not build here (no C compiler)")
    monkeypatch.setattr(cpu_kernels, "available", lambda: kernels)
    monkeypatch.setattr(cpu_kernels, "draw_seed", lambda: 77)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, T, 8, generator=g) for _ in range(3))
    qb, kb, vb = (t.bfloat16().requires_grad_(True) for t in (q, k, v))
    torch.manual_seed(4)
    out = attention_dropout_bf16(qb, kb, vb, 0.25)
    if kernels:  # element e of the (6, T, T) weights kept iff its 15-bit draw >= t
        keep = (reference_draws(77, 6 * T * T) >= cpu_kernels.threshold(0.25)).view(3, 2, T, T)
    else:
        torch.manual_seed(4)
        bits, scale = keep_bits((6, T, T), 0.25, "cpu")
        assert scale == 1 / 0.75  # p = 0.25 is exact in 15 bits
        keep = bits.view(3, 2, T, T) == -1
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    w = (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1) * keep / 0.75
    ref = w @ v
    assert out.dtype == torch.bfloat16
    assert _rel_err(out, ref) <= BF16_REL
    gy = torch.randn(3, 2, T, 8, generator=g)
    out.backward(gy.bfloat16())
    ref.backward(gy)
    for a, b in ((qb, q), (kb, k), (vb, v)):
        assert _rel_err(a.grad, b.grad) <= BF16_REL


@needs_bf16
def test_bias_selu_equals_selu_forward_and_backward():
    """``_BiasSELU`` (compiled forward, eager backward from the saved output) against
    autograd through ``F.selu(h + b)`` in float32 on the same bf16 inputs. Same shape as the
    block test below (one compilation)."""
    from brainomni.models.bf16_cpu import _BiasSELU

    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 12, 128, generator=g).bfloat16().requires_grad_(True)
    b = torch.randn(128, generator=g).requires_grad_(True)
    y = _BiasSELU.apply(h, b)
    gy = torch.randn(2, 5, 12, 128, generator=g).bfloat16()
    y.backward(gy)
    h32 = h.detach().float().requires_grad_(True)
    b32 = b.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.selu(h32 + b32)
    ref.backward(gy.float())
    assert y.dtype == torch.bfloat16 and h.grad.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=2**-7, atol=2**-7)  # bf16 rounding
    assert _rel_err(h.grad, h32.grad) <= 0.02
    assert _rel_err(b.grad, b32.grad) <= BF16_REL  # sums of 120 bf16-rounded terms


@needs_bf16
@pytest.mark.parametrize(
    ("dropout", "compiled", "kernels"),
    [
        (0.0, False, True),
        (0.2, False, True),
        (0.0, False, False),
        (0.2, False, False),
        (0.0, True, False),
    ],
)
def test_criss_cross_bf16_path_within_tolerance(dropout, compiled, kernels, monkeypatch):
    """The block's bf16 path (bf16 input; on the C kernels, or on PyTorch ops with or
    without ``compiled_kernels``) against the plain float32 block: without dropout forward
    and gradients within the bf16 tolerance; with dropout (other random draws than the
    plain block's) the same in eval mode, and in training it drops."""
    from brainomni.models import cpu_kernels
    from brainomni.models.layers import CrissCrossBlock
    from tests.models.plain_reference import CrissCrossBlock as PlainBlock

    if kernels and not cpu_kernels.available():
        pytest.skip("the C kernels did not build here (no C compiler)")
    monkeypatch.setattr(cpu_kernels, "available", lambda: kernels)

    torch.manual_seed(0)
    ours, plain = CrissCrossBlock(32, 4, dropout), PlainBlock(32, 4, dropout)
    ours.compiled_kernels = compiled  # BrainOmni(compile=True): _BiasSELU
    with torch.no_grad():  # non-trivial norm weights: the fold into the products is tested
        for n, p in ours.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    copy_weights(plain, ours)
    ours.train(dropout == 0.0), plain.train(dropout == 0.0)
    x = torch.randn(2, 5, 12, 32)
    rope = ours.time_attn.rope_tables(12, "cpu")
    xb = x.bfloat16().requires_grad_(True)
    with autocast("bf16", "cpu"):
        y = ours(xb, rope)
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    xr = x.clone().requires_grad_(True)
    ref = plain(xr)
    ref.square().mean().backward()
    assert _rel_err(y, ref) <= BF16_REL
    assert _rel_err(xb.grad, xr.grad) <= BF16_REL
    assert _flat_cos(_grads(ours), _grads(plain)) >= BF16_GRAD_COS
    if dropout:
        ours.train()
        with torch.no_grad(), autocast("bf16", "cpu"):
            dropped = ours(x.bfloat16(), rope)
        assert _rel_err(dropped, y) > 1e-2 and torch.isfinite(dropped.float()).all()
