"""Comparing codebook indices where they are decided by a clear margin.

The nearest-code search is discontinuous: two computations of the same latent that differ
only in float summation order (another channel order, batch composition, thread count or
CPU) can pick different codes where two codes are (nearly) equally close. Tests therefore
compare the continuous latents within a tolerance, and the indices only where the best
code wins by more than the latents can have moved.

The bound: a latent r that moves by ``delta`` (Euclidean) changes every distance
``||r - c||`` by at most ``delta`` (triangle inequality), so the nearest code cannot change
where ``second_best - best > 2 * delta``. With equal choices at the earlier RVQ layers, the
residuals differ by the same ``delta`` at every layer, so the rule applies layer by layer
as long as every earlier layer was clear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Float32 error of the library's own distance computation (256-term dot products of unit
# vectors, ~1e-6) and of its rotation-trick residuals (~1e-7), with room to spare.
DIST_SLACK = 1e-5


def rvq_walk(
    codebooks_QKD: torch.Tensor, z_BSWD: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 residual quantisation of the L2-normalised latents.

    Returns indices (B, S, W, Q) and margins (B, S, W, Q): second-best minus best
    Euclidean distance at each layer.
    """
    books = codebooks_QKD.double()
    r = F.normalize(z_BSWD.double(), p=2.0, dim=-1)
    shape = r.shape[:-1]
    r = r.reshape(-1, r.shape[-1])
    idx, margin = [], []
    for book in books:
        vals, ix = torch.cdist(r, book).topk(2, largest=False)
        idx.append(ix[:, 0])
        margin.append(vals[:, 1] - vals[:, 0])
        r = r - book[ix[:, 0]]
    return (
        torch.stack(idx, -1).view(*shape, -1),
        torch.stack(margin, -1).view(*shape, -1),
    )


def clear(margin_BSWQ: torch.Tensor, tol: torch.Tensor | float) -> torch.Tensor:
    """Where the choice is decided at this layer and every earlier one (bool, B S W Q).

    ``tol`` is a float or a tensor broadcastable to (B, S, W, 1) (per latent)."""
    return torch.cummin((margin_BSWQ > tol).to(torch.int8), dim=-1).values.bool()


def assert_codes_equal_where_clear(
    a: torch.Tensor, b: torch.Tensor, decided: torch.Tensor, *, min_fraction: float
) -> None:
    """Indices ``a`` and ``b`` agree wherever ``decided``; and enough of them are decided
    for the comparison to mean something (per RVQ layer)."""
    assert a.shape == b.shape == decided.shape
    bad = decided & (a != b)
    assert not bad.any(), f"{int(bad.sum())} decided codes differ"
    frac = decided.float().flatten(0, -2).mean(0)
    assert (frac >= min_fraction).all(), f"too few decided codes per layer: {frac.tolist()}"


def moved(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """(B, S, W, 1) Euclidean distance between the L2-normalised latents."""
    na = F.normalize(z_a.double(), p=2.0, dim=-1)
    nb = F.normalize(z_b.double(), p=2.0, dim=-1)
    return (na - nb).norm(dim=-1, keepdim=True)
