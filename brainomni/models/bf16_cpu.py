"""The bf16 CPU path of the criss-cross blocks (used by :mod:`brainomni.models.layers`).

Under ``precision="bf16"`` on CPU the blocks see bf16 activations. There PyTorch's eager
elementwise ops dominate a training step once the matrix products run on AMX: each
RMSNorm, RoPE and dropout is several full passes over the activations (float32 copies,
``bernoulli_``, autograd's saved intermediates). Where a C compiler is present the blocks
use the fused kernels of ``cpu_kernels.py`` (one pass each); the functions below are the
path without them: the same functions in fewer PyTorch passes, with hand-written
backwards. Both run only for bf16 CPU tensors, so the float32 default path is unchanged.
(torch.compile of the whole block was measured slower than this on the AMX CPU, see
speed.py.)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from brainomni.models import cpu_kernels, cpu_ops


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
    t = cpu_kernels.threshold(p)  # the C kernels' dropout uses the same threshold
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # the full 64-bit range: four uniform int16 lanes
    words.bitwise_and_(0x7FFF7FFF7FFF7FFF)  # 15 bits per lane: u in [0, 2^15)
    u = words.view(torch.int16)[:n].view(shape)
    return u.bitwise_not_().add_(t).bitwise_right_shift_(15), cpu_kernels.keep_scale(t)


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


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, Dh) -> (B, T, H Dh), whose backward hands back a contiguous (B, H, T, Dh)
    gradient: the attention's two backward products both take it, where from the transposed
    view autograd gave each of them its own copy."""
    return _MergeHeads.apply(x)


class _MergeHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        B, H, T, Dh = ctx.shape = x.shape
        return x.transpose(1, 2).reshape(B, T, H * Dh)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        B, H, T, Dh = ctx.shape
        return g.reshape(B, T, H, Dh).transpose(1, 2).contiguous()


def attention_dropout_bf16(q, k, v, dropout_p: float, scale: float | None = None):
    """``softmax(q k^T * scale) v`` with dropout, written out in bf16 (CPU SDPA would upcast
    to float32 for dropout). With the C kernels: scale, softmax, dropout and ``1/P(keep)`` in
    one pass between the two products (``cpu_ops.SoftmaxDropout``). Without: scale
    applied inside the first product, the mask by ``drop_bits``, its ``1/P(keep)`` on v
    (T / Dh times smaller than the weights, and so in backward too)."""
    *lead, T, Dh = q.shape
    Tk = k.shape[-2]
    scale = Dh**-0.5 if scale is None else scale
    q3, k3, v3 = q.reshape(-1, T, Dh), k.reshape(-1, Tk, Dh), v.reshape(-1, Tk, v.shape[-1])
    if cpu_kernels.available() and Tk <= cpu_kernels.MAX_ROW:  # scale, softmax, dropout, 1/P(keep)
        w = cpu_ops.SoftmaxDropout.apply(torch.bmm(q3, k3.transpose(1, 2)), dropout_p, scale)
        return torch.bmm(w, v3).view(*lead, T, v.shape[-1])
    w = torch.baddbmm(q3.new_empty(()), q3, k3.transpose(1, 2), beta=0.0, alpha=scale)
    w = _ShortSoftmax.apply(w) if Tk <= 32 else w.softmax(dim=-1)
    w, keep_scale = drop_bits(w, dropout_p)
    out = torch.bmm(w, v3 * keep_scale)
    return out.view(*lead, T, v.shape[-1])
