"""BrainOmni: windows, masking, raw vs indices, encode, criss-cross order, RoPE, compile."""

from __future__ import annotations

import pytest
import torch

from brainomni.models import BrainOmni, BrainTokenizer
from brainomni.models.layers import CrissCrossBlock, apply_rope, rope_angles


def _small_omni(**kw) -> BrainOmni:
    torch.manual_seed(0)
    tok = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16)
    return BrainOmni("tiny", tokenizer=tok, lm_dim=32, lm_head=4, lm_depth=2, **kw)


def _inputs(b: int, c: int, seconds: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, c, seconds * 256, generator=g),
        torch.randn(b, c, 6, generator=g),
        torch.randint(0, 3, (b, c), generator=g),
    )


def test_30s_gives_20_windows_160_steps():
    model = _small_omni()
    feats, idx = model.tokens(*_inputs(1, 7, 30))
    assert feats.shape == (1, 16, 160, 32) and idx.shape == (1, 16, 160, 4)


@pytest.mark.parametrize("train", [False, True])
def test_from_indices_equals_from_raw(train):
    model = _small_omni().train(train)
    x, pos, st = _inputs(2, 9, 6)
    _, idx = model.tokens(x, pos, st)
    torch.manual_seed(5)  # dropout draws
    raw = model(x, pos, st, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(5)
    ind = model(indices=idx, generator=torch.Generator().manual_seed(7))
    assert raw.keys() == ind.keys()
    for k in raw:
        torch.testing.assert_close(raw[k], ind[k], rtol=0, atol=0)
    raw["loss"].backward()
    assert model.blocks[0].time_attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.tokenizer.parameters())


def test_loss_is_cross_entropy_over_masked_positions():
    model = _small_omni(lm_dropout=0.0).eval()
    x, pos, st = _inputs(1, 4, 4)
    _, idx = model.tokens(x, pos, st)
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(idx.shape[:3], generator=g) > 0.5  # first draw of forward()
    out = model(indices=idx, generator=torch.Generator().manual_seed(3))
    # recompute the logits with the same corruption draws
    g = torch.Generator().manual_seed(3)
    feats = model.tokenizer.quantizer.lookup(idx)
    B, S, W, D = feats.shape
    keep2 = torch.rand(B, S, W, generator=g) > 0.5
    perm = torch.randperm(B * S * W, generator=g)
    u = torch.rand(B, S, W, generator=g)
    assert torch.equal(keep, keep2)
    h = torch.where(keep2[..., None], feats, feats.reshape(-1, D)[perm].view(B, S, W, D))
    h = torch.where(((keep2.float() + u) > 0.8)[..., None], h, model.mask_token)
    h = model._embed(h)
    for blk in model.blocks:
        h = blk(h)
    logits = model.predict_head(h).view(B, S, W, 4, -1)
    ce = torch.nn.functional.cross_entropy(logits[~keep].reshape(-1, 16), idx[~keep].reshape(-1))
    torch.testing.assert_close(out["loss"], ce)


def test_masking_proportions():
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(64, 16, 160, generator=g) > 0.5
    u = torch.rand(64, 16, 160, generator=g)
    token = (keep.float() + u) <= 0.8  # positions that get the mask token
    assert (~keep).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert not (token & keep).any()
    assert (token.sum() / (~keep).sum()).item() == pytest.approx(0.8, abs=0.01)


def test_encode_drops_last_block_and_normalises():
    model = _small_omni().eval()
    x, pos, st = _inputs(2, 5, 4)
    out = model.encode(x, pos, st)
    assert out.shape == (2, 16, 24, 32)  # 4 s with overlap 0.25 -> 3 windows -> 24 steps
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 16, 24))
    feats, _ = model.tokens(x, pos, st)
    h = model._embed(feats)
    h = model.blocks[0](h)  # depth 2: only the first block
    torch.testing.assert_close(out, torch.nn.functional.normalize(h, dim=-1, eps=1e-6))


def test_padded_batch_tokens_match():
    model = _small_omni().eval()
    a, b = _inputs(1, 3, 4, seed=1), _inputs(1, 6, 4, seed=2)
    x = torch.zeros(2, 6, 1024)
    pos = torch.zeros(2, 6, 6)
    st = torch.zeros(2, 6, dtype=torch.long)
    x[0, :3], pos[0, :3], st[0, :3] = a[0][0], a[1][0], a[2][0]
    x[1], pos[1], st[1] = b[0][0], b[1][0], b[2][0]
    mask = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    enc = model.encode(x, pos, st, mask)
    torch.testing.assert_close(enc[0], model.encode(*a)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(enc[1], model.encode(*b)[0], atol=1e-5, rtol=1e-4)


def test_criss_cross_output_order_is_spatial_then_temporal():
    torch.manual_seed(0)
    blk = CrissCrossBlock(16, 4, dropout=0.0).eval()
    x = torch.randn(2, 5, 7, 16)
    y = x.clone()
    y[..., :8] += torch.randn(2, 5, 7, 8)  # change only the temporal (first) half
    a, b = blk._attn(x), blk._attn(y)
    torch.testing.assert_close(a[..., :8], b[..., :8])  # spatial output untouched
    assert not torch.allclose(a[..., 8:], b[..., 8:])


def test_rope_matches_official_complex_form():
    torch.manual_seed(0)
    B, T, H, Dh = 2, 11, 4, 8
    dim = H * Dh
    q = torch.randn(B, T, H, Dh)
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    rotate = torch.polar(torch.ones(T, dim // 2), torch.outer(torch.arange(T).float(), freqs))
    rotate = rotate.view(T, H, Dh // 2).unsqueeze(0)
    ref = torch.view_as_real(torch.view_as_complex(q.reshape(B, T, H, -1, 2)) * rotate).flatten(3)
    torch.testing.assert_close(apply_rope(q, rope_angles(T, dim, H, 10000.0, q.device)), ref)


def test_bf16_autocast_and_sdpa_dtype():
    model = _small_omni().train()
    _, idx = model.tokens(*_inputs(2, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(indices=idx)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_torch_compile_block_matches_eager():
    torch.manual_seed(0)
    blk = CrissCrossBlock(32, 4, dropout=0.0).eval()
    x = torch.randn(2, 16, 24, 32)
    compiled = torch.compile(blk)
    torch.testing.assert_close(compiled(x), blk(x), atol=1e-5, rtol=1e-4)
