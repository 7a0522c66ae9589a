"""Reconstruction losses of the tokenizer, as the official code computes them.

All functions take matching tensors whose last axis is samples (…, L), e.g. (B, C, N, L) or
the (R, N, L) rows of the real channels of a padded batch, and return float32 scalars that
average over every leading position.
"""

from __future__ import annotations

import torch

TARGET_EPS = 1e-6
PCC_EPS = 1e-6


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (unbiased) std over the last axis, + 1e-6 in the denominator."""
    x = x.float()
    x = x - x.mean(dim=-1, keepdim=True)
    return x / (x.std(dim=-1, keepdim=True) + TARGET_EPS)


def time_l1(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (rec.float() - target.float()).abs().mean()


def pcc(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of the last axis, averaged over rows."""
    x, y = rec.float(), target.float()
    n = x.shape[-1]
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    cov = (xc * yc).sum(-1) / (n - 1)
    return (cov / (x.std(-1) * y.std(-1) + PCC_EPS)).mean()


def spectral_l1(rec: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude and phase L1 of the Hamming-windowed ``rfft(norm="ortho")``.

    The phase term is the plain absolute difference of ``angle()`` values in [-pi, pi], as in
    the official code (not the wrapped angular distance).
    """
    window = torch.hamming_window(rec.shape[-1], device=rec.device)
    fr = torch.fft.rfft(rec.float() * window, dim=-1, norm="ortho")
    ft = torch.fft.rfft(target.float() * window, dim=-1, norm="ortho")
    amp = (fr.abs() - ft.abs()).abs().mean()
    phase = (torch.angle(fr) - torch.angle(ft)).abs().mean()
    return amp, phase


def reconstruction_losses(rec: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``time_loss``, ``pcc``, ``amp_loss``, ``phase_loss`` of rows ``rec`` against ``target``."""
    amp, phase = spectral_l1(rec, target)
    return {
        "time_loss": time_l1(rec, target),
        "pcc": pcc(rec, target),
        "amp_loss": amp,
        "phase_loss": phase,
    }


def total_loss(
    parts: dict[str, torch.Tensor], commitment: torch.Tensor, *, phase_weight: float = 0.5
) -> torch.Tensor:
    """The official objective: time L1 + exp(-PCC) + commitment + amp L1 + 0.5 * phase L1.

    ``phase_weight`` (``TokenizerConfig.phase_weight``) replaces the 0.5; the official value
    is the default.
    """
    return (
        parts["time_loss"]
        + torch.exp(-parts["pcc"])
        + commitment
        + parts["amp_loss"]
        + phase_weight * parts["phase_loss"]
    )
