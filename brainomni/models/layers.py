"""Transformer pieces shared by the tokenizer and BrainOmni.

Shape legend: B batch, S latent sources (16), W latent time steps, T sequence length,
H heads, D features. Parameter names follow the official code (``model_utils/attn.py``)
so that released checkpoints load with only the renames in ``convert.py``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMS normalisation over the last axis, computed in float32 (eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).to(x.dtype)


class FeedForward(nn.Module):
    """``Linear(D, 4D) -> SELU -> Linear(4D, D) [-> Dropout]``."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, 4 * dim), nn.SELU(), nn.Linear(4 * dim, dim)]
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout))
        self.layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def rope_angles(seq_len: int, dim: int, n_head: int, base: float, device) -> torch.Tensor:
    """Rotation angles (T, H, Dh/2) of the official RoPE.

    The official layer computes ``dim/2`` frequencies over the *whole* attention width and
    hands head ``h`` the slice ``[h*Dh/2, (h+1)*Dh/2)``, so heads rotate at different rates.
    Pairs are adjacent features (2j, 2j+1), as in ``torch.view_as_complex``.
    """
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, device=device).float() / dim))
    t = torch.arange(seq_len, device=device).float()
    return torch.outer(t, freqs).view(seq_len, n_head, dim // n_head // 2)


def apply_rope(x_BTHD: torch.Tensor, angles_THd: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent feature pairs of ``x`` (B, T, H, Dh) by ``angles`` (T, H, Dh/2)."""
    return apply_rope_tables(x_BTHD, *rope_tables(angles_THd))


def rope_tables(angles_THd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and signed ``sin`` (T, H, Dh), float32, for ``apply_rope_tables``: each angle
    repeated for its pair, the sine negated on the even feature of the pair."""
    cos, sin = angles_THd.cos(), angles_THd.sin()
    return (
        torch.stack((cos, cos), dim=-1).flatten(-2),
        torch.stack((-sin, sin), dim=-1).flatten(-2),
    )


def apply_rope_tables(x_BTHD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` from ``rope_tables``: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin),
    in float32 as the official complex product (the same values, fewer passes)."""
    x = x_BTHD.float()
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) per pair
    return (x * cos + swapped * sin).to(x_BTHD.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention (fused qkv, SDPA), optionally with RoPE (on CPU in bf16: the
    heads' layout and both rotations in one ``_QKVHeads`` op).

    Attention dropout is applied in training only (the official code also applied it in
    ``eval()``; see docs/models.md).
    """

    def __init__(
        self,
        dim: int,
        n_head: int,
        dropout: float = 0.0,
        *,
        rope: bool = False,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__()
        if dim % n_head:
            raise ValueError(f"dim={dim} must be divisible by n_head={n_head}")
        self.dim, self.n_head, self.dropout = dim, n_head, dropout
        self.rope, self.rope_base = rope, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if rope:  # the bf16 CPU path's qkv row order (not in the state dict)
            self.register_buffer("halves_order", halves_order(dim, n_head), persistent=False)

    def rope_tables(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's RoPE tables for ``seq_len`` (compute once, pass to every call)."""
        return rope_tables(rope_angles(seq_len, self.dim, self.n_head, self.rope_base, device))

    def forward(
        self,
        x_BTD: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        in_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``in_scale`` (D,): a per-feature factor on ``x`` folded into the qkv weight (the
        bf16 path's RMSNorm weight, see ``CrissCrossBlock``)."""
        B, T, _ = x_BTD.shape
        w, b = self.qkv.weight, self.qkv.bias
        if in_scale is not None:
            w = w * in_scale
        fast = fast_bf16(x_BTD)
        if fast and self.rope:  # q/k features of each head reordered to [even | odd]
            w, b = w[self.halves_order], b[self.halves_order]
        qkv = F.linear(x_BTD, w, b).view(B, T, 3, self.n_head, -1)
        if self.rope:
            cos, sin = rope if rope is not None else self.rope_tables(T, x_BTD.device)
        if fast:  # q, k, v in the (B, H, T, Dh) layout of the products, RoPE on the way
            tables = halves_tables(cos, sin) if self.rope else (None, None)
            q, k, v = _QKVHeads.apply(qkv, *tables)
        else:
            q, k, v = qkv.unbind(2)  # B T H Dh
            if self.rope:
                q, k = apply_rope_tables(q, cos, sin), apply_rope_tables(k, cos, sin)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # B H T Dh
        out = attention(q, k, v, self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, T, self.dim))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """``softmax(q k^T / sqrt(Dh)) v`` with dropout on the attention weights.

    ``F.scaled_dot_product_attention`` (fused) unless attention dropout is active on CPU in
    bf16: there PyTorch's SDPA falls back to its math path, which upcasts bf16 to float32;
    ``attention_dropout_bf16`` is the same function with bf16 matrix products.
    """
    if dropout_p > 0.0 and fast_bf16(q):
        return attention_dropout_bf16(q, k, v, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class CrissCrossBlock(nn.Module):
    """Criss-cross block: half the features attend over time, half over sources.

    Input/output ``x`` (B, S, W, D). The first half of the features goes through temporal
    attention (RoPE) for each source, the second half through spatial attention over the
    sources at each step; the outputs are concatenated as ``[spatial, temporal]``, the
    official (checkpoint-compatible) order. Pre-RMSNorm, FFN 4x SELU, dropout.
    """

    def __init__(self, dim: int, n_head: int, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % 2 or n_head % 2:
            raise ValueError(f"dim={dim} and n_head={n_head} must be even")
        self.pre_attn_norm = RMSNorm(dim)
        self.time_attn = SelfAttention(dim // 2, n_head // 2, dropout, rope=True)
        self.spatial_attn = SelfAttention(dim // 2, n_head // 2, dropout, rope=False)
        self.pre_ff_norm = RMSNorm(dim)
        self.ff = FeedForward(dim, dropout)

    #: set by ``BrainOmni(compile=True)``: the bf16 CPU path uses ``torch.compile``d
    #: elementwise kernels (``_BiasSELU``) instead of being compiled as a whole
    compiled_kernels: bool = False

    def forward(
        self, x_BSWD: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``rope``: ``time_attn.rope_tables(W, device)``, computed here when not given."""
        if fast_bf16(x_BSWD):
            return self._forward_bf16(x_BSWD, rope)
        x_BSWD = x_BSWD + self._attn(self.pre_attn_norm(x_BSWD), rope)
        return x_BSWD + self.ff(self.pre_ff_norm(x_BSWD))

    @torch.compiler.disable  # a compiled block runs this path eagerly: see compiled_kernels
    def _forward_bf16(self, x_BSWD: torch.Tensor, rope) -> torch.Tensor:
        """The same function on the bf16 CPU path: each RMSNorm weight folded into the
        following qkv / first FFN weight (``W (w * x) = (W diag(w)) x``), the norm by
        ``rms_scale``, dropout by ``drop_bits``; with ``compiled_kernels`` the first FFN
        bias and SELU in one compiled pass (``_BiasSELU``). Inductor-compiled whole blocks
        were slower than this path on the AMX CPU (speed.py), so ``torch.compile`` does not
        trace it."""
        h = x_BSWD.shape[-1] // 2
        w = self.pre_attn_norm.weight
        y = rms_scale(x_BSWD, self.pre_attn_norm.eps)
        x_BSWD = x_BSWD + self._attn(y, rope, (w[:h], w[h:]))
        y = rms_scale(x_BSWD, self.pre_ff_norm.eps)
        lin1, act, lin2 = self.ff.layer[:3]
        w1 = lin1.weight * self.pre_ff_norm.weight
        if self.compiled_kernels:
            f = lin2(_BiasSELU.apply(torch.matmul(y, w1.t()), lin1.bias))
        else:
            f = lin2(act(F.linear(y, w1, lin1.bias)))
        p = self.ff.layer[3].p if len(self.ff.layer) > 3 and self.training else 0.0
        if p > 0.0:
            f, keep_scale = drop_bits(f, p)
            return x_BSWD.add(f, alpha=keep_scale)
        return x_BSWD + f

    def _attn(self, x_BSWD: torch.Tensor, rope=None, scales=(None, None)) -> torch.Tensor:
        B, S, W, D = x_BSWD.shape
        h = D // 2
        xt, xs = x_BSWD.split(h, dim=-1)  # one backward concatenation, no zero-filled slices
        xt = xt.reshape(B * S, W, h)
        xs = xs.transpose(1, 2).reshape(B * W, S, h)
        xt = self.time_attn(xt, rope, scales[0]).view(B, S, W, h)
        xs = self.spatial_attn(xs, None, scales[1]).view(B, W, S, h).transpose(1, 2)
        return torch.cat([xs, xt], dim=-1)


# --------------------------------------------------------------------------- bf16 CPU path
# Under ``precision="bf16"`` on CPU the blocks see bf16 activations. There PyTorch's eager
# elementwise ops dominate a training step once the matrix products run on AMX: each
# RMSNorm, RoPE and dropout is several full passes over the activations (float32 copies,
# ``bernoulli_``, autograd's saved intermediates). The functions below compute the same
# functions in fewer passes, with hand-written backwards; they run only for bf16 CPU
# tensors, so the float32 default path is unchanged. (torch.compile of the whole block was
# measured slower than this on the AMX CPU, see speed.py.)


def fast_bf16(x: torch.Tensor) -> bool:
    """Whether ``x`` takes the bf16 CPU fast path (``precision="bf16"`` on CPU)."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"


class _RMSScale(torch.autograd.Function):
    """``x * rsqrt(mean(x^2) + eps)`` (no weight: the caller folds it into the next
    matrix product), result in x's dtype, backward in two passes. The norm is accumulated
    in float32 by the bf16 kernel and rounded to bf16 (relative error <= 2^-8, as the
    output's own rounding), the rest of the statistics in float32: asking the norm for a
    float32 result would first copy x to float32 (2.1 against 0.36 ms per call)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)
        sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True).to(acc).square_()
        rstd = torch.rsqrt(sq.div_(x.shape[-1]).add_(eps))
        ctx.save_for_backward(x, rstd)
        return x * rstd.to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        # y = x r, r = (mean(x^2) + eps)^-1/2  =>  dx = g r - x r^3 <g, x> / D
        x, rstd = ctx.saved_tensors
        dot = torch.linalg.vecdot(g, x, dim=-1).to(rstd.dtype).unsqueeze(-1)
        coef = (rstd.pow(3) * dot).div_(-x.shape[-1])
        return torch.addcmul(g * rstd.to(g.dtype), x, coef.to(x.dtype)), None


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    return _RMSScale.apply(x, eps)


def halves_order(dim: int, n_head: int) -> torch.Tensor:
    """Row order of the qkv weight on the bf16 path: within each q and k head the even
    features, then the odd ones (v unchanged). q . k sums over a head's features, so the same
    order on q and k leaves the attention unchanged, and RoPE's pairs (2j, 2j+1) become
    (j, j + Dh/2): two contiguous halves instead of stride-2 views (``_QKVHeads``)."""
    dh = dim // n_head
    head = torch.cat([torch.arange(0, dh, 2), torch.arange(1, dh, 2)])
    qk = (torch.arange(2 * n_head)[:, None] * dh + head).flatten()
    return torch.cat([qk, torch.arange(2 * dim, 3 * dim)])


def halves_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rope_tables``' (T, H, Dh) tables (each angle repeated for its pair, the sine negated
    on the even feature) in the halves order, bf16, (T, H, Dh): ``[c, c]`` and ``[-s, s]``."""
    c, s = cos[..., 0::2], sin[..., 1::2]
    return (
        torch.cat([c, c], -1).to(torch.bfloat16),
        torch.cat([-s, s], -1).to(torch.bfloat16),
    )


class _QKVHeads(torch.autograd.Function):
    """The fused qkv output (B, T, 3, H, Dh) -> q, k, v, each (B, H, T, Dh) contiguous (the
    layout the attention products take without a copy), with RoPE on q and k when tables
    ``c``, ``s`` (T, H, Dh) are given: in the halves order (``halves_order``) RoPE is
    ``x * c + swap(x) * s``, ``swap`` exchanging the halves of each head, i.e.
    (x0 c - x1 s, x1 c + x0 s) per pair of the original order.

    One op instead of unbind + RoPE + three transposing copies, whose backward autograd
    would assemble as a stack and zero-filled slices plus an add: this one writes the qkv
    gradient once (the inverse rotation for q and k). Rotating contiguous halves is 2.5x
    faster than adjacent pairs through stride-2 views (4.5 against 11.3 ms for q and k of
    4 x 16 x 160 x 128, one thread)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, c: torch.Tensor | None, s: torch.Tensor | None):
        B, T, _, H, Dh = qkv.shape
        out = qkv.new_empty(3, B, H, T, Dh)
        dst = out.permute(1, 3, 0, 2, 4)  # (B, T, 3, H, Dh) view of out
        if c is None:
            dst.copy_(qkv)
        else:
            dst[:, :, 2].copy_(qkv[:, :, 2])
            for i in (0, 1):
                _rotate_halves(qkv[:, :, i], c, s, dst[:, :, i])
        ctx.save_for_backward(c, s)
        return out[0], out[1], out[2]

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        c, s = ctx.saved_tensors
        g0 = next(g for g in grads if g is not None)
        B, H, T, Dh = g0.shape
        out = g0.new_empty(B, T, 3, H, Dh)
        for i, g in enumerate(grads):
            if g is None:
                out[:, :, i].zero_()
            elif c is None or i == 2:
                out[:, :, i].copy_(g.transpose(1, 2))
            else:  # the inverse rotation
                _rotate_halves(g.transpose(1, 2), c, -s, out[:, :, i])
        return out, None, None


def _rotate_halves(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor, out: torch.Tensor) -> None:
    h = x.shape[-1] // 2
    swapped = torch.cat([x[..., h:], x[..., :h]], dim=-1)
    torch.mul(x, c, out=out)
    out.addcmul_(swapped, s)


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # torch.nn.SELU's


def _bias_selu(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.selu(h.float() + b.float()).to(h.dtype)


@functools.cache
def _compiled_bias_selu():
    return torch.compile(_bias_selu)


class _BiasSELU(torch.autograd.Function):
    """``selu(h + b)`` for bf16 ``h`` (the first FFN product without its bias), one
    inductor-compiled pass (float32 inside, bf16 out). PyTorch's bf16 ``elu`` kernel is slow
    on CPU and ``addmm`` writes the bias into its output before the product, an extra pass:
    ``addmm`` + SELU took 47 ms, ``mm`` + this 18 ms (10 240 x 256 -> 1 024, one thread).
    The backward is eager: ``elu_backward`` from the saved output (dy/dh = y + scale*alpha
    where y <= 0) and the bias gradient (a compiled backward measured no faster). Used with ``compile=True`` only (it needs inductor and a C++ compiler)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = _compiled_bias_selu()(h, b)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        gh = torch.ops.aten.elu_backward(g, SELU_ALPHA, SELU_SCALE, 1.0, True, y)
        # summed in bf16 (float32 accumulation inside, as autograd's addmm bias gradient):
        # sum(dtype=float32) would first copy the whole gradient to float32 (28 against 3 ms)
        return gh, gh.sum(dim=tuple(range(gh.ndim - 1))).float()


def keep_bits(shape: torch.Size, p: float, device) -> tuple[torch.Tensor, float]:
    """A Bernoulli keep mask as int16 bit patterns (-1, all bits set, where kept; 0 where
    dropped) and the matching scale ``1 / P(keep)``. Applying it is a bitwise AND on the
    bf16 bits (``_DropBits``): no bool -> bf16 conversion, no float multiply (with the
    draw, 12.6 against 25 ms for the 256 x 160 x 160 attention weights, one thread).

    15 random bits per element u (from ``int64.random_`` over the full range: a quarter of
    the generator calls of ``bernoulli_``), kept iff u >= t = round(p 2^15), so
    P(keep) = 1 - t / 2^15 (within 2^-16 of 1 - p; the scale uses the exact value). The test
    is branch-free integer arithmetic: ``(~u + t) >> 15`` is -1 iff u >= t (no int16
    overflow for 0 <= u, t < 2^15). Draws from the default generator."""
    t = round(p * 32768)
    if not 0 < t < 32768:
        raise ValueError(f"dropout p={p} must be in [2^-16, 1 - 2^-16)")
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # the full 64-bit range: four uniform int16 lanes
    words.bitwise_and_(0x7FFF7FFF7FFF7FFF)  # 15 bits per lane: u in [0, 2^15)
    u = words.view(torch.int16)[:n].view(shape)
    return u.bitwise_not_().add_(t).bitwise_right_shift_(15), 32768 / (32768 - t)


class _DropBits(torch.autograd.Function):
    """``x`` (bf16) with the elements where ``keep`` (``keep_bits``) is 0 set to 0 (no
    scaling: the caller puts ``1/P(keep)`` where it is cheapest). Backward: the same mask on
    the gradient. Saves only the int16 mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(keep)
        return _and_bits(x, keep)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _and_bits(g, keep), None


def _and_bits(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return (x.contiguous().view(torch.int16) & keep).view(x.dtype)


def drop_bits(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """Dropout of a bf16 ``x`` without the scaling: (masked x, ``1/P(keep)``)."""
    keep, scale = keep_bits(x.shape, p, x.device)
    return _DropBits.apply(x, keep), scale


class _ShortSoftmax(torch.autograd.Function):
    """``softmax`` over short rows (the spatial attention's 16 sources): PyTorch's bf16 CPU
    softmax kernels are slow there, its backward most (2 560 x 16 x 16, one thread: forward
    3.3 ms, here 2.2 via float32; backward 8.4 ms, here 2.4 as ``(g - <g, p>) p``). Over
    the 160-long temporal rows the native kernels are faster and are used."""

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:
        p = s.to(torch.promote_types(s.dtype, torch.float32)).softmax(dim=-1).to(s.dtype)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (p,) = ctx.saved_tensors
        return (g - torch.linalg.vecdot(g, p, dim=-1).unsqueeze(-1)).mul_(p)


def attention_dropout_bf16(q, k, v, dropout_p: float, scale: float | None = None):
    """``softmax(q k^T * scale) v`` with dropout, written out in bf16 (CPU SDPA would upcast
    to float32 for dropout): scale applied inside the first product, the mask by
    ``drop_bits``, its ``1/P(keep)`` on v (T / Dh times smaller than the weights, and so in
    backward too)."""
    *lead, T, Dh = q.shape
    Tk = k.shape[-2]
    scale = Dh**-0.5 if scale is None else scale
    q3, k3, v3 = q.reshape(-1, T, Dh), k.reshape(-1, Tk, Dh), v.reshape(-1, Tk, v.shape[-1])
    w = torch.baddbmm(q3.new_empty(()), q3, k3.transpose(1, 2), beta=0.0, alpha=scale)
    w = _ShortSoftmax.apply(w) if Tk <= 32 else w.softmax(dim=-1)
    w, keep_scale = drop_bits(w, dropout_p)
    out = torch.bmm(w, v3 * keep_scale)
    return out.view(*lead, T, v.shape[-1])
