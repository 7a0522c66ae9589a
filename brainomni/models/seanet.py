"""SEANet encoder and decoder (EnCodec style), the per-channel waveform codec of the tokenizer.

Non-causal, weight-normalised convolutions with reflect padding; ELU; one residual block per
stage (kernel 3 then 1x1, channel compression 2, 1x1-conv shortcut); a 2-layer LSTM with a skip
connection at the bottleneck. Module names mirror EnCodec's (``model.N.conv.conv``,
``model.N.block.M``, ``model.N.lstm``) which the official BrainOmni code reuses, so released
weights map one to one (weight-norm ``weight_g``/``weight_v`` are renamed by ``convert.py``).

Shapes: the encoder maps (N, 1, L) to (N, D, L / prod(ratios)); the decoder the reverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works when the input is shorter than the padding."""
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    x = F.pad(x, (left, right), mode="reflect")
    return x[..., : x.shape[-1] - extra] if extra else x


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
    """Conv1d with EnCodec's non-causal 'same' padding (reflect) and weight norm."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = NormConv1d(in_ch, out_ch, kernel_size, stride, dilation=dilation)
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        total = (k - 1) * self.dilation - (s - 1)
        length = x.shape[-1]
        n_frames = (length - k + total) / s + 1
        extra = (math.ceil(n_frames) - 1) * s + (k - total) - length
        right = total // 2
        return self.conv(_reflect_pad(x, total - right, right + extra))


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight norm, trimming ``kernel - stride`` samples symmetrically."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.convtr = NormConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        total = self.kernel_size - self.stride
        right = total // 2
        return y[..., total - right : y.shape[-1] - right]


class SLSTM(nn.Module):
    """LSTM over the time axis of a (N, D, T) tensor, with a skip connection."""

    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        return (y + x).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    """ELU -> conv k=3 (dim -> dim/2) -> ELU -> conv 1x1 (dim/2 -> dim), plus 1x1 shortcut."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(),
            SConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            SConv1d(hidden, dim, 1),
        )
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(nn.Module):
    """(N, 1, L) -> (N, dimension, L / prod(ratios)); strides applied as reversed(ratios)."""

    def __init__(
        self,
        dimension: int = 256,
        n_filters: int = 32,
        ratios: tuple[int, ...] = (8, 4, 2),
        kernel_size: int = 5,
        last_kernel_size: int = 5,
        lstm: int = 2,
    ) -> None:
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
        if lstm:
            layers.append(SLSTM(mult * n_filters, lstm))
        layers += [nn.ELU(), SConv1d(mult * n_filters, dimension, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(nn.Module):
    """(N, dimension, W) -> (N, 1, W * prod(ratios)); mirrors the encoder."""

    def __init__(
        self,
        dimension: int = 256,
        n_filters: int = 32,
        ratios: tuple[int, ...] = (8, 4, 2),
        kernel_size: int = 5,
        last_kernel_size: int = 5,
        lstm: int = 2,
    ) -> None:
        super().__init__()
        mult = 2 ** len(ratios)
        layers: list[nn.Module] = [SConv1d(dimension, mult * n_filters, kernel_size)]
        if lstm:
            layers.append(SLSTM(mult * n_filters, lstm))
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
