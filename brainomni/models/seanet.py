"""SEANet encoder and decoder (EnCodec style), the per-channel waveform codec of the tokenizer.

Non-causal, weight-normalised convolutions with reflect padding; ELU; one residual block per
stage (kernel 3 then 1x1, channel compression 2, 1x1-conv shortcut); a 2-layer LSTM with a skip
connection at the bottleneck. Module names mirror EnCodec's (``model.N.conv.conv``,
``model.N.block.M``, ``model.N.lstm``) which the official BrainOmni code reuses, so released
weights map one to one (weight-norm ``weight_g``/``weight_v`` are renamed by ``convert.py``).

Shapes: the encoder maps (N, 1, L) to (N, D, L / prod(ratios)); the decoder the reverse.

Speed (CPU profile: these convolutions are memory-bound at 512 samples), without changing the
function or any parameter: an ELU followed by a reflect-padded convolution is one fused op that
writes the activation straight into the padded buffer (``_EluReflectPad``); 1x1 convolutions
are batched matrix products, and a residual block's shortcut and last 1x1 conv accumulate into
one output (``torch.baddbmm``); transposed convolutions trim through their ``padding`` instead
of slicing; each weight-normalised weight is computed once per call.
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


class _EluReflectPad(torch.autograd.Function):
    """``F.pad(F.elu(x), (left, right), mode="reflect")`` in one pass (needs left, right < L).

    Backward folds the gradient of the reflected edges back and applies the ELU derivative
    from the saved output, instead of zero-filling and scattering a padded-size gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        L = x.shape[-1]
        out = x.new_empty(*x.shape[:-1], left + L + right)
        mid = out[..., left : left + L]
        torch._C._nn.elu(x, out=mid)
        if left:
            out[..., :left] = mid[..., 1 : left + 1].flip(-1)
        if right:
            out[..., left + L :] = mid[..., L - 1 - right : L - 1].flip(-1)
        ctx.save_for_backward(out)
        ctx.left, ctx.right = left, right
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        left, right = ctx.left, ctx.right
        L = out.shape[-1] - left - right
        mid = out[..., left : left + L]
        gx = _elu_grad(grad[..., left : left + L], mid)
        if left:
            gx[..., 1 : left + 1] += _elu_grad(grad[..., :left].flip(-1), mid[..., 1 : left + 1])
        if right:
            gx[..., L - 1 - right : L - 1] += _elu_grad(
                grad[..., left + L :].flip(-1), mid[..., L - 1 - right : L - 1]
            )
        return gx, None, None


def _elu_grad(grad: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) derivative from its output: ``grad * (1 if y > 0 else y + 1)``."""
    return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, True, result)


def _pointwise(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """1x1 ``conv1d`` (N, C, L) -> (N, O, L) as one batched matrix product on the same weight."""
    N, _, L = x.shape
    w = w[..., 0].expand(N, -1, -1)
    if b is None:
        return torch.bmm(w, x)
    return torch.baddbmm(b.view(1, -1, 1).expand(N, -1, L), w, x)


# oneDNN's bf16 convolutions (torch 2.13 CPU, measured on an AMX Xeon) return wrong values
# for small channel counts with kernels >= 4: e.g. conv1d 16 -> 32 channels, kernel 8,
# stride 4, or conv_transpose1d 32 -> 16, kernel 8, stride 4, are off by ~100 % of the
# output's scale, forward and backward. Every shape with kernel <= 3, or >= 32 channels on
# both sides, was exact to bf16 rounding (tests/models/test_speed_paths.py checks the
# guarded shapes). Under CPU autocast such a convolution runs in float32 instead; in the
# paper's configuration that is only the 1-channel first encoder / last decoder conv.
_BF16_MIN_CHANNELS = 32


def _bf16_unsafe(x: torch.Tensor, in_ch: int, out_ch: int, kernel: int) -> bool:
    return (
        kernel > 3
        and min(in_ch, out_ch) < _BF16_MIN_CHANNELS
        and x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
    )


def _is_elu(m: nn.Module) -> bool:
    return isinstance(m, nn.ELU) and m.alpha == 1.0


def _run(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, with each ELU handed to the following convolution to fuse."""
    pending = False
    for m in layers:
        if _is_elu(m):
            if pending:
                x = F.elu(x)
            pending = True
            continue
        if isinstance(m, SConv1d):
            x = m(x, pre_elu=pending)
        else:
            x = m(F.elu(x) if pending else x)
        pending = False
    return F.elu(x) if pending else x


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

    def forward(self, x: torch.Tensor, pre_elu: bool = False) -> torch.Tensor:
        """The convolution of ``x`` (of ``F.elu(x)`` with ``pre_elu``)."""
        conv = self.conv.conv
        weight, bias = conv.weight, conv.bias  # weight norm computed once
        k, s, d = self.kernel_size, self.stride, self.dilation
        if k == 1 and s == 1 and x.ndim == 3:
            return _pointwise(F.elu(x) if pre_elu else x, weight, bias)
        total = (k - 1) * d - (s - 1)
        length = x.shape[-1]
        n_frames = (length - k + total) / s + 1
        extra = (math.ceil(n_frames) - 1) * s + (k - total) - length
        right = total // 2
        left, right = total - right, right + extra
        # (compiled: inductor fuses ELU + pad itself, and mis-sizes the custom op's buffer)
        if pre_elu and max(left, right) < length and not torch.compiler.is_compiling():
            x = _EluReflectPad.apply(x, left, right)
        else:
            x = _reflect_pad(F.elu(x) if pre_elu else x, left, right)
        if _bf16_unsafe(x, conv.in_channels, conv.out_channels, k):
            with torch.autocast("cpu", enabled=False):
                return F.conv1d(x.float(), weight, bias, s, 0, d)
        return F.conv1d(x, weight, bias, s, 0, d)


class SConvTranspose1d(nn.Module):
    """ConvTranspose1d with weight norm, trimming ``kernel - stride`` samples symmetrically."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.convtr = NormConvTranspose1d(in_ch, out_ch, kernel_size, stride)
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convtr = self.convtr.convtr
        total = self.kernel_size - self.stride
        right = total // 2
        left = total - right
        if _bf16_unsafe(x, convtr.in_channels, convtr.out_channels, self.kernel_size):
            with torch.autocast("cpu", enabled=False):
                return self._trimmed(x.float(), convtr.weight, convtr.bias, left, right)
        return self._trimmed(x, convtr.weight, convtr.bias, left, right)

    def _trimmed(self, x, weight, bias, left: int, right: int) -> torch.Tensor:
        if left == right:  # symmetric trim = the convolution's own padding, no slice
            return F.conv_transpose1d(x, weight, bias, self.stride, left)
        y = F.conv_transpose1d(x, weight, bias, self.stride)
        return y[..., left : y.shape[-1] - right]


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
        elu0, conv0, elu1, conv1 = self.block
        sc = self.shortcut
        if not (
            _is_elu(elu0)
            and _is_elu(elu1)
            and x.ndim == 3
            and conv1.kernel_size == conv1.stride == sc.kernel_size == sc.stride == 1
        ):
            return sc(x) + self.block(x)
        h = F.elu(conv0(x, pre_elu=True))
        # shortcut(x) + conv1(h): both 1x1, accumulated into one output
        ws, bs = sc.conv.conv.weight, sc.conv.conv.bias
        wb, bb = conv1.conv.conv.weight, conv1.conv.conv.bias
        N, _, L = x.shape
        out = torch.baddbmm(
            (bs + bb).view(1, -1, 1).expand(N, -1, L), ws[..., 0].expand(N, -1, -1), x
        )
        wb = wb[..., 0].to(out.dtype).expand(N, -1, -1)  # in place: no autocast, cast as it would
        return out.baddbmm_(wb, h.to(out.dtype))


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
        return _run(self.model, x)


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
        return _run(self.model, z)
