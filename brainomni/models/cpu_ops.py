"""The autograd functions over the fused bf16 CPU kernels (``cpu_kernels.c``; built and
loaded by ``cpu_kernels.py``, which also says why they exist). Each ``forward`` and
``backward`` is one kernel pass (plus, where named, a PyTorch matrix product); the callers
(``layers.py``, ``bf16_cpu.py``, ``omni.py``) use them only when ``cpu_kernels.available()``.
Inputs are bf16 CPU tensors; biases and norms' statistics are float32.
"""

from __future__ import annotations

import torch

from brainomni.models import cpu_kernels as ck


def _bf16c(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        raise TypeError(f"cpu kernels take bf16 CPU tensors, got {x.dtype} on {x.device}")
    return x.contiguous()


def _f32(b: torch.Tensor) -> torch.Tensor:
    """A bias as the kernels read it: float32, contiguous, outside autograd."""
    return b.detach().float().contiguous()


class SoftmaxDropout(torch.autograd.Function):
    """``dropout(softmax(alpha * s, -1))``, the kept weights scaled by ``1/P(keep)``
    (``p == 0``: the softmax). Saves the softmax and the dropped weights; the backward reads
    the mask back from the dropped weights (zero where dropped; where the softmax weight is
    0 its gradient is 0 either way)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, p: float, alpha: float = 1.0) -> torch.Tensor:
        s = _bf16c(s)
        L = s.shape[-1]
        if L > ck.MAX_ROW:
            raise ValueError(f"softmax rows of {L} exceed the kernel's {ck.MAX_ROW}")
        rows = s.numel() // L
        prob = torch.empty_like(s)
        t, ctx.ks, seed = ck.dropout(p)
        ctx.alpha = float(alpha)
        dropped = torch.empty_like(s) if t else prob
        ck.call("softmax_dropout_fwd", s, prob, dropped, rows, L, seed, t, ctx.ks, ctx.alpha)
        ctx.masked = bool(t)
        ctx.save_for_backward(prob, dropped)
        return dropped

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        prob, dropped = ctx.saved_tensors
        g = _bf16c(g)
        L = g.shape[-1]
        ds = torch.empty_like(g)
        rows, masked = g.numel() // L, int(ctx.masked)
        ck.call("softmax_dropout_bwd", g, prob, dropped, ds, rows, L, masked, ctx.ks, ctx.alpha)
        return ds, None, None


class QKVHeads(torch.autograd.Function):
    """``bf16_cpu._QKVHeads`` with the qkv bias, one kernel pass each way: the product
    without its bias + bias (3 H Dh) -> q, k, v (B, H, T, Dh), RoPE on q and k in the halves
    order when tables ``c``, ``s`` (T, H, Dh) are given. The backward gives the product's
    gradient and the bias gradient (their sum over the tokens) in one pass.

    ``qkv`` is (B, T, 3, H, Dh), or (tokens, 3, H, Dh) with ``layout = (B, T, inner)``: the
    sequences' tokens interleaved with stride ``inner`` (``cpu_kernels.c``'s TOKEN; the
    criss-cross block's spatial attention over its (B, S, W) tokens is (B W, S, W))."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: torch.Tensor | None, c, s, layout=None):
        qkv = _bf16c(qkv)
        *_, H, Dh = qkv.shape
        B, T, inner = layout if layout is not None else (qkv.shape[0], qkv.shape[1], 1)
        if B * T * 3 * H * Dh != qkv.numel() or B % inner:
            raise ValueError(f"qkv {tuple(qkv.shape)} does not hold {B} x {T} tokens")
        if Dh > ck.MAX_HEAD or (c is not None and Dh % 2):
            raise ValueError(f"head width {Dh} must be <= {ck.MAX_HEAD}, and even with RoPE")
        if c is not None:
            c, s = _bf16c(c), _bf16c(s)
        b32 = _f32(bias) if bias is not None else None
        q, k, v = (qkv.new_empty(B, H, T, Dh) for _ in range(3))
        ck.call("qkv_heads_fwd", qkv, b32, c, s, q, k, v, B, T, H, Dh, inner)
        ctx.save_for_backward(c, s)
        ctx.b_dtype = bias.dtype if bias is not None else None
        ctx.qkv_shape, ctx.inner = qkv.shape, inner
        return q, k, v

    @staticmethod
    def backward(ctx, gq, gk, gv):
        c, s = ctx.saved_tensors
        gs, transposed = [], 0
        for i, g in enumerate((gq, gk, gv)):
            if g is not None and g.dtype == torch.bfloat16 and g.transpose(-1, -2).is_contiguous():
                transposed |= 1 << i  # (B, H, Dh, T) storage, read as such: no copy
            elif g is not None:
                g = _bf16c(g)
            gs.append(g)
        g0 = next(g for g in gs if g is not None)
        B, H, T, Dh = g0.shape
        out = g0.new_empty(ctx.qkv_shape)
        want_b = ctx.b_dtype is not None and ctx.needs_input_grad[1]
        gb = torch.empty(3 * H * Dh, dtype=torch.float32) if want_b else None
        ck.call("qkv_heads_bwd", *gs, transposed, c, s, out, gb, B, T, H, Dh, ctx.inner)
        return out, (gb.to(ctx.b_dtype) if want_b else None), None, None, None


class MergeHeads(torch.autograd.Function):
    """The attention output (B, H, T, Dh) -> its tokens' rows (tokens, H Dh) in the order of
    ``QKVHeads``' ``layout`` inner stride; the backward splits the gradient back into a
    contiguous (B, H, T, Dh), the layout both backward products of the attention take."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inner: int) -> torch.Tensor:
        x = _bf16c(x)
        B, H, T, Dh = x.shape
        out = x.new_empty(B * T, H * Dh)
        ck.call("merge_heads", x, out, B, T, H, Dh, inner, 0)
        ctx.shape, ctx.inner = x.shape, inner
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g = _bf16c(g)
        B, H, T, Dh = ctx.shape
        out = g.new_empty(ctx.shape)
        ck.call("merge_heads", g, out, B, T, H, Dh, ctx.inner, 1)
        return out, None


class RMSScale(torch.autograd.Function):
    """``bf16_cpu._RMSScale``: ``x * rsqrt(mean(x^2) + eps)`` over the last axis."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        return _rms_forward(ctx, x, eps)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, rstd = ctx.saved_tensors
        return _rms_backward(g, None, x, rstd), None


class ResidualRMSScale(torch.autograd.Function):
    """``(x, RMSScale(x))`` for a residual stream ``x`` that goes on past the norm: the
    backward adds the stream's own gradient inside the norm's backward pass, where autograd
    would add the two gradients of ``x`` in a pass of its own."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float):
        return x.view_as(x), _rms_forward(ctx, x, eps)

    @staticmethod
    def backward(ctx, g_x: torch.Tensor | None, g_y: torch.Tensor | None):
        x, rstd = ctx.saved_tensors
        if g_y is None:
            return g_x, None
        return _rms_backward(g_y, g_x, x, rstd), None


def _rms_forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
    x = _bf16c(x)
    D = x.shape[-1]
    y = torch.empty_like(x)
    rstd = torch.empty(x.numel() // D, dtype=torch.float32)
    ck.call("rms_fwd", x, y, rstd, x.numel() // D, D, eps)
    ctx.save_for_backward(x, rstd)
    return y


def _rms_backward(g, gres, x, rstd) -> torch.Tensor:
    g = _bf16c(g)
    gres = _bf16c(gres) if gres is not None else None
    D = x.shape[-1]
    dx = torch.empty_like(x)
    ck.call("rms_bwd", g, gres, x, rstd, dx, x.numel() // D, D)
    return dx


class BiasSELU(torch.autograd.Function):
    """``selu(h + b)`` in place on the bf16 product ``h`` (the first FFN product without its
    bias; ``h`` must not be needed elsewhere), saving the output; the backward gives the
    input gradient and the bias gradient (float32) in one pass."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not h.is_contiguous():
            raise ValueError("BiasSELU works in place on a contiguous product")
        F = h.shape[-1]
        ck.call("bias_selu_fwd", h, _f32(b), h.numel() // F, F)
        ctx.mark_dirty(h)
        ctx.save_for_backward(h)
        ctx.b_dtype = b.dtype
        return h

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        g = _bf16c(g)
        F = y.shape[-1]
        gh = torch.empty_like(y)
        gb = torch.empty(F, dtype=torch.float32)
        ck.call("bias_selu_bwd", g, y, gh, gb, y.numel() // F, F)
        return gh, gb.to(ctx.b_dtype)


class BiasDropoutAdd(torch.autograd.Function):
    """``x + dropout(f + b)`` (scaled by ``1/P(keep)``; ``p == 0``: ``x + f + b``) in one pass,
    the mask recomputed from the call's seed in the backward (nothing but the seed saved)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: torch.Tensor, b: torch.Tensor, p: float):
        x, f = _bf16c(x), _bf16c(f)
        if x.shape != f.shape:
            raise ValueError(f"x {tuple(x.shape)} and f {tuple(f.shape)} differ")
        D = x.shape[-1]
        ctx.t, ctx.scale, ctx.seed = ck.dropout(p)
        ctx.b_dtype = b.dtype
        out = torch.empty_like(x)
        rows = x.numel() // D
        ck.call("bias_dropout_add_fwd", x, f, _f32(b), out, rows, D, ctx.seed, ctx.t, ctx.scale)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g = _bf16c(g)
        D = g.shape[-1]
        gf = torch.empty_like(g)
        gb = torch.empty(D, dtype=torch.float32)
        rows = g.numel() // D
        ck.call("bias_dropout_add_bwd", g, gf, gb, rows, D, ctx.seed, ctx.t, ctx.scale)
        return g, gf, gb.to(ctx.b_dtype), None


class ResidualCat(torch.autograd.Function):
    """``x + cat([a + ba, b + bb], -1)`` in one pass: the block's residual add of its two
    attention projections, computed without their biases (``a`` (N, h1), ``b`` (N, h2), in
    ``x``'s token order; ``x`` (..., h1 + h2)). The backward hands ``a`` and ``b`` views of
    the gradient (the projections' products read them in place) and the biases' gradients
    from one column-sum pass."""

    @staticmethod
    def forward(ctx, x, a, b, ba, bb):
        x, a, b = _bf16c(x), _bf16c(a), _bf16c(b)
        h1, h2 = a.shape[-1], b.shape[-1]
        N = x.numel() // (h1 + h2)
        if x.shape[-1] != h1 + h2 or a.numel() != N * h1 or b.numel() != N * h2:
            raise ValueError(f"x {tuple(x.shape)}, a {tuple(a.shape)}, b {tuple(b.shape)}")
        out = torch.empty_like(x)
        ck.call("residual_cat_fwd", x, a, b, _f32(ba), _f32(bb), out, N, h1, h2)
        ctx.dims, ctx.dtypes = (N, h1, h2), (ba.dtype, bb.dtype)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        N, h1, h2 = ctx.dims
        g = _bf16c(g)
        g2 = g.view(N, h1 + h2)
        sums = torch.empty(h1 + h2, dtype=torch.float32)
        ck.call("column_sums", g2, sums, N, h1 + h2)
        return (
            g,
            g2[:, :h1],
            g2[:, h1:],
            sums[:h1].to(ctx.dtypes[0]),
            sums[h1:].to(ctx.dtypes[1]),
        )


class CrossEntropyRows(torch.autograd.Function):
    """Per-row cross-entropy of bf16 logits (R, K) against labels (R), float32, and the rows'
    argmax (not differentiable): ``F.cross_entropy(logits.float(), labels, reduction="none")``
    in one pass over the bf16 logits, no float32 copy; the backward writes the bf16 logit
    gradient ``g (softmax - onehot)`` in one pass."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor):
        logits = _bf16c(logits)
        R, K = logits.shape
        labels = labels.to(torch.int64).contiguous()
        if labels.shape != (R,):
            raise ValueError(f"labels {tuple(labels.shape)} must be ({R},)")
        if R and (int(labels.min()) < 0 or int(labels.max()) >= K):
            raise ValueError(f"labels must lie in [0, {K}) (target out of bounds)")
        loss = torch.empty(R, dtype=torch.float32)
        lse = torch.empty(R, dtype=torch.float32)
        am = torch.empty(R, dtype=torch.int64)
        ck.call("xent_fwd", logits, labels, loss, lse, am, R, K)
        ctx.save_for_backward(logits, labels, lse)
        ctx.mark_non_differentiable(am)
        return loss, am

    @staticmethod
    def backward(ctx, g: torch.Tensor, _g_am):
        logits, labels, lse = ctx.saved_tensors
        g = g.float().contiguous()
        R, K = logits.shape
        dx = torch.empty_like(logits)
        ck.call("xent_bwd", logits, labels, lse, g, dx, R, K)
        return dx, None
