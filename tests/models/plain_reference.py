"""The paper's layers in plain PyTorch: the reference our fast paths are measured against.

Standard ``nn.Conv1d``/``nn.ConvTranspose1d`` with ``weight_norm``, ``nn.ELU`` modules and
EnCodec's reflect ``pad1d`` in the SEANet; attention written out (``softmax(q k^T / sqrt(d))
v`` with a ``-inf`` key mask); RoPE as the official complex product; RMSNorm as the official
one. Every module and parameter has the name of ours (and so of the official code), so
``plain.load_state_dict(ours.state_dict())`` gives both the same weights and both compute the
same function; only the formulation differs. Used by ``tests/models/test_speed_paths.py``
(equality) and ``tests/benchmarks/bench_models.py`` (speed, side by side). Not a fast path:
never import this from the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from brainomni.models import BrainOmni, BrainTokenizer, TokenizerConfig

# --------------------------------------------------------------------------- SEANet (EnCodec)


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "reflect") -> torch.Tensor:
    """EnCodec's ``pad1d``: reflect padding that also works on inputs shorter than the pad."""
    left, right = paddings
    length = x.shape[-1]
    if mode == "reflect":
        max_pad = max(left, right)
        extra = 0
        if length <= max_pad:
            extra = max_pad - length + 1
            x = F.pad(x, (0, extra))
        padded = F.pad(x, paddings, mode)
        end = padded.shape[-1] - extra
        return padded[..., :end]
    return F.pad(x, paddings, mode)


class NormConv1d(nn.Module):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(*args, **kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NormConvTranspose1d(nn.Module):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.convtr = weight_norm(nn.ConvTranspose1d(*args, **kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(x)


class SConv1d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride=1, dilation=1) -> None:
        super().__init__()
        self.conv = NormConv1d(in_ch, out_ch, kernel_size, stride, dilation=dilation)
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, d = self.kernel_size, self.stride, self.dilation
        padding_total = (k - 1) * d - (s - 1)
        length = x.shape[-1]
        n_frames = (length - k + padding_total) / s + 1
        ideal_length = (math.ceil(n_frames) - 1) * s + (k - padding_total)
        extra = ideal_length - length
        padding_right = padding_total // 2
        padding_left = padding_total - padding_right
        return self.conv(pad1d(x, (padding_left, padding_right + extra)))


class SConvTranspose1d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride) -> None:
        super().__init__()
        self.convtr = NormConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        padding_total = self.kernel_size - self.stride
        padding_right = padding_total // 2
        padding_left = padding_total - padding_right
        return y[..., padding_left : y.shape[-1] - padding_right]


class SLSTM(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 3, compress: int = 2) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(), SConv1d(dim, hidden, kernel_size), nn.ELU(), SConv1d(hidden, dim, 1)
        )
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    def __init__(self, dimension, n_filters, ratios, kernel_size, last_kernel_size, lstm=2):
        super().__init__()
        mult = 1
        layers: list[nn.Module] = [SConv1d(1, n_filters, kernel_size)]
        for ratio in reversed(ratios):
            layers += [
                ResnetBlock(mult * n_filters),
                nn.ELU(),
                SConv1d(mult * n_filters, 2 * mult * n_filters, 2 * ratio, stride=ratio),
            ]
            mult *= 2
        layers += [SLSTM(mult * n_filters, lstm), nn.ELU()]
        layers.append(SConv1d(mult * n_filters, dimension, last_kernel_size))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    def __init__(self, dimension, n_filters, ratios, kernel_size, last_kernel_size, lstm=2):
        super().__init__()
        mult = 2 ** len(ratios)
        layers: list[nn.Module] = [
            SConv1d(dimension, mult * n_filters, kernel_size),
            SLSTM(mult * n_filters, lstm),
        ]
        for ratio in ratios:
            layers += [
                nn.ELU(),
                SConvTranspose1d(mult * n_filters, mult * n_filters // 2, 2 * ratio, ratio),
                ResnetBlock(mult * n_filters // 2),
            ]
            mult //= 2
        layers += [nn.ELU(), SConv1d(n_filters, 1, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


# --------------------------------------------------------------------------- attention


def attention(q, k, v, key_mask=None, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` written out; ``key_mask`` (..., 1, 1, Tk) True = keep."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


def rope_rotation(seq_len: int, dim: int, n_head: int, base: float) -> torch.Tensor:
    """The official complex ``rotate`` buffer (T, H, Dh/2): dim/2 frequencies over the whole
    attention width, head h taking its slice."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(seq_len).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles).view(seq_len, n_head, -1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * normed).type_as(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        layers = [nn.Linear(dim, 4 * dim), nn.SELU(), nn.Linear(4 * dim, dim)]
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout))
        self.layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_head: int, dropout: float, rope: bool) -> None:
        super().__init__()
        self.dim, self.n_head, self.dropout, self.rope = dim, n_head, dropout, rope
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def rope_tables(self, seq_len: int, device) -> None:
        """BrainOmni.forward asks block 0 for shared RoPE tables; the plain blocks make their
        own rotation each call (as the official layer's buffer), so there are none."""
        return None

    def forward(self, x: torch.Tensor, rotate: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, -1).unbind(2)  # B T H Dh
        if self.rope:
            rot = rope_rotation(T, self.dim, self.n_head, 10000.0) if rotate is None else rotate

            def turn(t):
                c = torch.view_as_complex(t.float().reshape(B, T, self.n_head, -1, 2))
                return torch.view_as_real(c * rot).flatten(3).type_as(t)

            q, k = turn(q), turn(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(B, T, self.dim))


class CrissCrossBlock(nn.Module):
    def __init__(self, dim: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.pre_attn_norm = RMSNorm(dim)
        self.time_attn = SelfAttention(dim // 2, n_head // 2, dropout, rope=True)
        self.spatial_attn = SelfAttention(dim // 2, n_head // 2, dropout, rope=False)
        self.pre_ff_norm = RMSNorm(dim)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:  # rope tables: ignored
        B, S, W, D = x.shape
        h = D // 2
        y = self.pre_attn_norm(x)
        xt = y[..., :h].reshape(B * S, W, h)
        xs = y[..., h:].transpose(1, 2).reshape(B * W, S, h)
        xt = self.time_attn(xt).view(B, S, W, h)
        xs = self.spatial_attn(xs).view(B, W, S, h).transpose(1, 2)
        x = x + torch.cat([xs, xt], dim=-1)
        return x + self.ff(self.pre_ff_norm(x))


# --------------------------------------------------------------------------- tokenizer parts


class BackWardSolution(nn.Module):
    def __init__(self, dim: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q_SD, k_XCD, x_XCD, key_mask_XC):
        X, C, D = k_XCD.shape
        H = self.n_head
        q = q_SD.view(1, -1, H, D // H).transpose(1, 2).expand(X, -1, -1, -1)
        k = k_XCD.view(X, C, H, -1).transpose(1, 2)
        v = self.v(x_XCD).view(X, C, H, -1).transpose(1, 2)
        mask = None if key_mask_XC is None else key_mask_XC[:, None, None, :]
        out = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(X, -1, D))


class ForwardSolution(nn.Module):
    def __init__(self, dim: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, sensor_XCD, sources_XSD):
        X, C, D = sensor_XCD.shape
        H = self.n_head
        k, v = self.kv(sources_XSD).chunk(2, dim=-1)
        q = sensor_XCD.view(X, C, H, -1).transpose(1, 2)
        k = k.reshape(X, -1, H, D // H).transpose(1, 2)
        v = v.reshape(X, -1, H, D // H).transpose(1, 2)
        out = attention(q, k, v, None, self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(X, C, D))


# --------------------------------------------------------------------------- whole models


def plain_tokenizer(config: TokenizerConfig | None = None, **overrides) -> BrainTokenizer:
    """A ``BrainTokenizer`` whose SEANets and attentions are the plain modules above (the
    glue - sensor MLP, reshapes, the vector-quantize-pytorch RVQ, losses - is the same code).
    Load weights with ``load_state_dict(ours.state_dict())``."""
    tok = BrainTokenizer(config, **overrides)
    cfg = tok.config
    if cfg.precision != "fp32" or cfg.compile:
        raise ValueError("the plain reference runs in float32, eager")
    args = (cfg.n_dim, cfg.n_filters, cfg.ratios, cfg.kernel_size, cfg.last_kernel_size)
    tok.encoder.seanet_encoder = SEANetEncoder(*args)
    tok.encoder.backwardsolution = BackWardSolution(cfg.n_dim, cfg.n_head, cfg.dropout)
    tok.decoder.forwardsolution = ForwardSolution(cfg.n_dim, cfg.n_head, cfg.dropout)
    tok.decoder.seanet_decoder = SEANetDecoder(*args)
    return tok


def plain_omni(size: str = "tiny", *, tokenizer: BrainTokenizer, **overrides) -> BrainOmni:
    """``BrainOmni`` with plain criss-cross blocks (same names); ``tokenizer`` is shared."""
    model = BrainOmni(size, tokenizer=tokenizer, **overrides)
    cfg = model.config
    if cfg.precision != "fp32" or cfg.compile:
        raise ValueError("the plain reference runs in float32, eager")
    model.blocks = nn.ModuleList(
        CrissCrossBlock(cfg.lm_dim, cfg.lm_head, cfg.lm_dropout) for _ in range(cfg.lm_depth)
    )
    return model


def copy_weights(dst: nn.Module, src: nn.Module) -> None:
    """``dst.load_state_dict(src.state_dict())``, every name matched (strict)."""
    dst.load_state_dict(src.state_dict(), strict=True)


# --------------------------------------------------------------------------- dropout draws
# The bf16 CPU kernels' generator (brainomni/models/cpu_kernels.c), written independently.
GOLDEN = 0x9E3779B97F4A7C15
M1, M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _u64(x: int) -> torch.Tensor:
    return torch.tensor(x - (1 << 64) if x >= 1 << 63 else x, dtype=torch.int64)


def _srl(z: torch.Tensor, n: int) -> torch.Tensor:  # logical right shift of int64 bits
    return (z >> n) & ((1 << (64 - n)) - 1)


def reference_draws(seed: int, n: int) -> torch.Tensor:
    """The 15-bit draws of elements 0..n-1 (cpu_kernels.c's ``draw15``), from splitmix64 in
    torch int64 arithmetic (wrapping multiplication, logical shifts by masking)."""
    w = torch.arange((n + 3) // 4, dtype=torch.int64)
    z = _u64(seed) + w * _u64(GOLDEN)
    z = (z ^ _srl(z, 30)) * _u64(M1)
    z = (z ^ _srl(z, 27)) * _u64(M2)
    z = z ^ _srl(z, 31)
    lanes = torch.stack([_srl(z, 16 * i) & 0x7FFF for i in range(4)], dim=-1)
    return lanes.flatten()[:n]
