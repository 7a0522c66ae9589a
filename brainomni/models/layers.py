"""Transformer pieces shared by the tokenizer and BrainOmni.

Shape legend: B batch, S latent sources (16), W latent time steps, T sequence length,
H heads, D features. Parameter names follow the official code (``model_utils/attn.py``)
so that released checkpoints load with only the renames in ``convert.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brainomni.models import cpu_kernels, cpu_ops
from brainomni.models.bf16_cpu import (  # the bf16 CPU path (see that module)
    _BiasSELU,
    _QKVHeads,
    attention_dropout_bf16,
    drop_bits,
    fast_bf16,
    halves_order,
    halves_tables,
    merge_heads,
    rms_scale,
)


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

    def kernels_fit(self, seq_len: int) -> bool:
        """Whether the C kernels (built, ``cpu_kernels``) take this layer's heads and
        ``seq_len``-long softmax rows (``forward_tokens``)."""
        return (
            cpu_kernels.available()
            and self.dim // self.n_head <= cpu_kernels.MAX_HEAD
            and seq_len <= cpu_kernels.MAX_ROW
        )

    def forward_tokens(
        self,
        x_ND: torch.Tensor,
        layout: tuple[int, int, int],
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        in_scale: torch.Tensor | None = None,
        proj_bias: bool = True,
    ) -> torch.Tensor:
        """The same function on the C kernels' bf16 path (``cpu_kernels``, where
        ``kernels_fit``) for tokens given as rows of ``x_ND`` (N, D) (a strided view is fine:
        the product reads it in place), ``layout = (B, T, inner)``: B sequences of T tokens,
        interleaved with stride ``inner`` (``cpu_ops.QKVHeads``). Returns (N, D) in the same
        token order; ``proj_bias=False`` leaves out the output projection's bias (the block
        adds it in its residual pass, ``cpu_ops.ResidualCat``)."""
        B, T, inner = layout
        w, b = self.qkv.weight, self.qkv.bias
        if in_scale is not None:
            w = w * in_scale
        tables = (None, None)
        if self.rope:  # q/k features of each head reordered to [even | odd]
            w, b = w[self.halves_order], b[self.halves_order]
            cos, sin = rope if rope is not None else self.rope_tables(T, x_ND.device)
            tables = halves_tables(cos, sin)
        qkv = torch.matmul(x_ND, w.t()).view(-1, 3, self.n_head, self.dim // self.n_head)
        q, k, v = cpu_ops.QKVHeads.apply(qkv, b, *tables, layout)
        out = attention(q, k, v, self.dropout if self.training else 0.0)
        merged = cpu_ops.MergeHeads.apply(out, inner)
        return F.linear(merged, self.proj.weight, self.proj.bias if proj_bias else None)

    def forward(
        self,
        x_BTD: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        in_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``in_scale`` (D,): a per-feature factor on ``x`` folded into the qkv weight (the
        bf16 path's RMSNorm weight, see ``CrissCrossBlock``)."""
        B, T, _ = x_BTD.shape
        fast = fast_bf16(x_BTD)
        if fast and self.kernels_fit(T):
            x_ND = x_BTD.reshape(B * T, -1)
            return self.forward_tokens(x_ND, (B, T, 1), rope, in_scale).view(B, T, self.dim)
        w, b = self.qkv.weight, self.qkv.bias
        if in_scale is not None:
            w = w * in_scale
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
        if fast:
            return self.proj(merge_heads(out))
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
        following qkv / first FFN weight (``W (w * x) = (W diag(w)) x``). With the C kernels
        (``cpu_kernels``): the norms with the residual stream's gradient added in their
        backward, the attention outputs' biases, concatenation and residual add in one pass,
        bias + SELU in place, bias + dropout + residual add in one pass. Without: the norm
        by ``rms_scale``, dropout by ``drop_bits``, and with ``compiled_kernels`` the first
        FFN bias and SELU in one compiled pass (``_BiasSELU``). Inductor-compiled whole
        blocks were slower than this path on the AMX CPU (speed.py), so ``torch.compile``
        does not trace it."""
        h = x_BSWD.shape[-1] // 2
        w = self.pre_attn_norm.weight
        fused = cpu_kernels.available()  # (the norm and FFN kernels take any width)
        if fused:
            x_BSWD, y = cpu_ops.ResidualRMSScale.apply(x_BSWD, self.pre_attn_norm.eps)
            x_BSWD = self._attn_residual(x_BSWD, y, rope, (w[:h], w[h:]))
            x_BSWD, y = cpu_ops.ResidualRMSScale.apply(x_BSWD, self.pre_ff_norm.eps)
        else:
            y = rms_scale(x_BSWD, self.pre_attn_norm.eps)
            x_BSWD = x_BSWD + self._attn(y, rope, (w[:h], w[h:]))
            y = rms_scale(x_BSWD, self.pre_ff_norm.eps)
        lin1, act, lin2 = self.ff.layer[:3]
        w1 = lin1.weight * self.pre_ff_norm.weight
        p = self.ff.layer[3].p if len(self.ff.layer) > 3 and self.training else 0.0
        if fused:  # bias + SELU in place on the product; bias + dropout + residual in one pass
            f = cpu_ops.BiasSELU.apply(torch.matmul(y, w1.t()), lin1.bias)
            f = torch.matmul(f, lin2.weight.t())
            return cpu_ops.BiasDropoutAdd.apply(x_BSWD, f, lin2.bias, p)
        if self.compiled_kernels:
            f = lin2(_BiasSELU.apply(torch.matmul(y, w1.t()), lin1.bias))
        else:
            f = lin2(act(F.linear(y, w1, lin1.bias)))
        if p > 0.0:
            f, keep_scale = drop_bits(f, p)
            return x_BSWD.add(f, alpha=keep_scale)
        return x_BSWD + f

    def _attn_residual(self, res_BSWD: torch.Tensor, x_BSWD: torch.Tensor, rope, scales):
        """``res + _attn(x)`` on the C kernels' path: both attentions read and write the
        (B, S, W) token rows (no transposed copies), and their projections' biases, the
        concatenation and the residual add are one pass (``cpu_ops.ResidualCat``)."""
        B, S, W, D = x_BSWD.shape
        h = D // 2
        if not (self.time_attn.kernels_fit(W) and self.spatial_attn.kernels_fit(S)):
            return res_BSWD + self._attn(x_BSWD, rope, scales)
        xt, xs = x_BSWD.reshape(-1, D).split(h, dim=-1)  # strided views, backward one cat
        xt = self.time_attn.forward_tokens(xt, (B * S, W, 1), rope, scales[0], proj_bias=False)
        xs = self.spatial_attn.forward_tokens(xs, (B * W, S, W), None, scales[1], proj_bias=False)
        pb, tb = self.spatial_attn.proj.bias, self.time_attn.proj.bias
        return cpu_ops.ResidualCat.apply(res_BSWD, xs, xt, pb, tb)

    def _attn(self, x_BSWD: torch.Tensor, rope=None, scales=(None, None)) -> torch.Tensor:
        B, S, W, D = x_BSWD.shape
        h = D // 2
        xt, xs = x_BSWD.split(h, dim=-1)  # one backward concatenation, no zero-filled slices
        xt = xt.reshape(B * S, W, h)
        xs = xs.transpose(1, 2).reshape(B * W, S, h)
        xt = self.time_attn(xt, rope, scales[0]).view(B, S, W, h)
        xs = self.spatial_attn(xs, None, scales[1]).view(B, W, S, h).transpose(1, 2)
        return torch.cat([xs, xt], dim=-1)
