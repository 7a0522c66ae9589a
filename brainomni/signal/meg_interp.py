"""MEG bad-channel interpolation weights: MNE's, computed several times faster.

``interpolate_bads(mode="accurate", origin=...)`` maps the good MEG channels onto the bad
ones with MNE's sphere-model field interpolation (``_map_meg_or_eeg_channels``): lead-field
dot products between every pair of coil integration points (a Legendre series of 99
terms in P_n, P_n' and P_n''), the same between good and bad channels, then a whitened,
truncated pseudo-inverse. MNE evaluates the series channel by channel on every call (about
9 s for a CTF 275 on one core), a fixed cost per recording whatever its length.

This module computes exactly the same quantities with these changes, each of which
leaves the result equal to MNE's up to float rounding (tests compare to 1e-6 relative):

- the dot products of *all* MEG channels, once per sensor geometry and origin (cached in
  the process): the good-good block MNE calls ``self_dots`` and the bad-good block it
  calls ``cross_dots`` are both sub-matrices of it, so the second pass (bads found by the
  rules) and any other bad set on the same geometry cost only the small pseudo-inverse;
- each unordered pair of integration points once (the dot product is symmetric);
- the series by the three-term recurrences vectorised over the pairs, with the powers
  beta^(n+1) folded into the recurrence and the weighted sums done by BLAS; for pairs
  more than ~18 degrees apart (|cos| <= 0.95: most of them) the derivative series come from
  the P_n series by the Legendre identities (``_meg_sums_apart``), a third of the work;
- pairs grouped by the series degree they need: with beta = (0.06 / r)^2 < 0.5 at a MEG
  helmet, the terms of degree ~45 and up are below 1e-16 of the pair's first term, under
  the float64 rounding of the sum (bound in ``_degree_thresholds``); MNE sums all 99
  whatever beta (and so does this code when beta needs it).

The coil integration points (``_create_meg_coils``, accuracy "normal"), the ad hoc noise
(``_make_field_mapping_noise``) and the pseudo-inverse (``_reg_pinv``) are MNE's own
functions: only the dot products, where the time goes, are recomputed here. No compiled
extension (numba) is used because the ingest environment does not ship one.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_MEG_CONST = 4e-14 * np.pi  # mu_0^2 / 4 pi, as MNE's _lead_dots
_INT_RAD = 0.06  # MNE's integration radius for field mapping
_MISS = 1e-4  # MNE's truncation: omit at most this fraction of the singular values' sum
_TAIL = 1e-16  # series terms dropped once below this fraction of the pair's first term
_X_APART = 0.95  # pairs with |cos| up to this use the cheaper identities
# 4 point-by-point float64 matrices are held: 4096 points (any MEG helmet: CTF 275 has
# 2200, Neuromag 306 1224) keep them under 0.6 GB; beyond, MNE's own chunked code is used
MAX_POINTS = 4096
_TILE = 64  # points per side of a tile of pairs (4096 pairs: the buffers stay in cache)


@dataclass(frozen=True)
class MegGeometry:
    """Integration points of the MEG channels of one Info, in the head frame."""

    rows: np.ndarray  # (C,) positions of the MEG channels in the Info
    owner: np.ndarray  # (P,) channel (0..C-1) of each integration point, non-decreasing
    rmag: np.ndarray  # (P, 3)
    cosmag: np.ndarray  # (P, 3)
    w: np.ndarray  # (P,)
    noise_var: np.ndarray  # (C,) MNE's ad hoc noise variance per channel

    def key(self, origin: np.ndarray, n_coeff: int) -> str:
        h = hashlib.sha256()
        for a in (self.owner, self.rmag, self.cosmag, self.w, origin):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update(str(n_coeff).encode())
        return h.hexdigest()


def meg_geometry(info) -> MegGeometry:
    """The MEG channels of ``info`` (``pick_types(meg=True, ref_meg=False)``, as MNE's
    interpolation picks them) and their coil integration points. ``ValueError`` when a
    MEG channel has no finite position."""
    import mne
    from mne.forward._field_interpolation import _make_field_mapping_noise
    from mne.forward._make_forward import _create_meg_coils, _read_coil_defs

    rows = mne.pick_types(info, meg=True, ref_meg=False, exclude=())
    if rows.size == 0:
        z = np.zeros((0, 3))
        return MegGeometry(rows, np.zeros(0, int), z, z, np.zeros(0), np.zeros(0))
    sub = mne.pick_info(info, rows, verbose="error")
    coils = _create_meg_coils(
        sub["chs"], "normal", sub["dev_head_t"], _read_coil_defs(verbose=False)
    )
    owner = np.concatenate([np.full(len(c["w"]), i) for i, c in enumerate(coils)])
    rmag = np.concatenate([c["rmag"] for c in coils])
    cosmag = np.concatenate([c["cosmag"] for c in coils])
    w = np.concatenate([c["w"] for c in coils])
    if not (np.all(np.isfinite(rmag)) and np.all(np.isfinite(cosmag))):
        bad = sorted({coils[i]["chname"] for i in owner[~np.isfinite(rmag).all(axis=1)]})
        raise ValueError(
            f"MEG channels without a finite position: {bad[:5]}; their coil geometry is "
            "needed to interpolate; drop them or fix the file's channel locations"
        )
    noise = _make_field_mapping_noise(sub)["data"].ravel()
    return MegGeometry(rows, owner, rmag, cosmag, w, np.asarray(noise, dtype=float))


def _degree_thresholds(n_max: int) -> np.ndarray:
    """``t[N-1]``: the largest beta for which the terms of degree > N are all below
    _TAIL times the pair's degree-1 term (~beta^2). A term of degree n is at most
    beta^(n+1) n^3 (|P_n| <= 1, |P_n'| <= n^2 / 2, |P_n''| <= n^4 / 8 times MNE's factors
    <= n / 2, n^-1 / 2, n^-2 / 2), so degree N suffices when beta^(n-1) n^3 < _TAIL for
    every n > N; with beta <= 1/2 the geometric tail adds at most a factor 2."""
    n = np.arange(2, n_max + 2, dtype=float)
    # beta^(n-1) n^3 < tail  <=>  beta < (tail / n^3)^(1 / (n-1)), for every dropped n
    limit = np.exp((np.log(_TAIL / 2) - 3 * np.log(n)) / (n - 1))
    # stopping at N drops the degrees N+1 .. n_max+1: the smallest of their limits
    t = np.minimum.accumulate(limit[::-1])[::-1][:n_max].copy()
    t[-1] = np.inf  # all of MNE's degrees: exact whatever beta
    return t


def _pair_degrees(beta: np.ndarray, n_max: int) -> np.ndarray:
    """The series degree each pair needs (see _degree_thresholds), at least 2."""
    t = _THRESHOLDS.get(n_max)
    if t is None:
        t = _THRESHOLDS.setdefault(n_max, _degree_thresholds(n_max))
    return np.maximum(np.searchsorted(t, beta, side="left") + 1, 2).astype(np.uint8)


_THRESHOLDS: dict[int, np.ndarray] = {}


def _meg_sums(x: np.ndarray, b: np.ndarray, N: int) -> np.ndarray:
    """MNE's ``_comp_sums_meg`` (four Legendre series per pair) up to degree N, (4, m).

    q_n = beta^(n+1) P_n(x) and its derivatives follow the three-term recurrences
    multiplied through by beta: q_n = ((2n-1) x beta q_{n-1} - (n-1) beta^2 q_{n-2}) / n,
    q'_n = n beta q_{n-1} + x beta q'_{n-1}, q''_n = (n+1) beta q'_{n-1} + x beta q''_{n-1}.
    """
    k = x.size
    n = np.arange(1, N + 1, dtype=float)
    c0 = n * (n + 1) / (2 * n + 1)
    c1 = n / (2 * n + 1)
    c2 = c1 / (n + 1)
    q = np.empty((N + 1, k))
    qd = np.empty((N + 1, k))
    qdd = np.empty((N + 1, k))
    t = np.empty(k)
    xb = x * b
    b2 = b * b
    q[0] = b
    q[1] = xb * b
    qd[0] = 0.0
    qd[1] = b2
    qdd[0] = 0.0
    qdd[1] = 0.0
    for i in range(2, N + 1):
        np.multiply(xb, q[i - 1], out=q[i])
        q[i] *= (2 * i - 1) / i
        np.multiply(b2, q[i - 2], out=t)
        t *= (i - 1) / i
        q[i] -= t
        np.multiply(xb, qd[i - 1], out=qd[i])
        np.multiply(b, q[i - 1], out=t)
        t *= i
        qd[i] += t
        np.multiply(xb, qdd[i - 1], out=qdd[i])
        np.multiply(b, qd[i - 1], out=t)
        t *= i + 1
        qdd[i] += t
    out = np.empty((4, k))
    out[0] = c0 @ q[1:]
    out[1] = c1 @ qd[1:]
    out[2] = c2 @ qd[1:]
    out[3] = c2 @ qdd[1:]
    return out


def _meg_sums_apart(x: np.ndarray, b: np.ndarray, N: int) -> np.ndarray:
    """``_meg_sums`` for pairs with |x| <= _X_APART, from the P_n recurrence only.

    The derivative series follow from P_n by the identities
    (1 - x^2) P_n' = n (P_{n-1} - x P_n) and (1 - x^2) P_n'' = 2x P_n' - n(n+1) P_n,
    so s1, s2 (and s3 through s2) are weighted sums of the same q_n = beta^(n+1) P_n: a
    third of the work. Dividing by 1 - x^2 >= 0.0975 costs one or two digits (tested
    against MNE's sums to 1e-12 of their scale; measured ~3e-14); pairs closer to each
    other's axis (|x| > 0.95,
    e.g. the points of one coil) take the full recurrences (``_meg_sums``).
    """
    from scipy.linalg.blas import daxpy

    k = x.size
    n = np.arange(1, N + 1, dtype=float)
    c0 = n * (n + 1) / (2 * n + 1)
    c1 = n / (2 * n + 1)
    c2 = c1 / (n + 1)
    # r_i = q_i / s_i with s_i = prod_{j<=i} (2j-1)/j: r_i = x beta r_{i-1} - g_i beta^2 r_{i-2}
    # (one scalar per step, applied by BLAS axpy: three passes over the pairs per degree)
    i = np.arange(N + 1, dtype=float)
    steps = np.ones(N + 1)
    steps[2:] = (2 * i[2:] - 1) / i[2:]
    s = np.cumprod(steps)
    g = np.zeros(N + 1)
    g[2:] = (i[2:] - 1) / i[2:] * s[:-2] / s[2:]
    r = np.empty((N + 1, k))
    t = np.empty(k)
    xb = x * b
    b2 = b * b
    r[0] = b
    r[1] = xb * b
    for m in range(2, N + 1):
        np.multiply(xb, r[m - 1], out=r[m])
        np.multiply(b2, r[m - 2], out=t)
        daxpy(t, r[m], a=-g[m])  # in place: r[m] is a contiguous float64 row
    w3 = c2 * n * (n + 1)
    w3[0] = 0.0  # n = 1 has P_1'' = 0: left out of the identity (exact cancellation)
    on_prev = (np.stack([n * c1, n * c2]) * s[:N]) @ r[:N]  # weights on q_{n-1}
    on_this = (np.stack([c0, n * c1, n * c2, w3]) * s[1:]) @ r[1:]  # weights on q_n
    inv = 1.0 / (1.0 - x * x)
    out = np.empty((4, k))
    out[0] = on_this[0]
    out[1] = (b * on_prev[0] - x * on_this[1]) * inv
    out[2] = (b * on_prev[1] - x * on_this[2]) * inv
    out[3] = (2.0 * x * (out[2] - c2[0] * b2) - on_this[3]) * inv
    return out


def lead_dots(geom: MegGeometry, origin, n_coeff: int = 100) -> np.ndarray:
    """(C, C) lead-field dot products of all MEG channels of ``geom`` (MNE's
    ``_do_self_dots`` over all of them), cached per geometry, origin and ``n_coeff``."""
    origin = np.asarray(origin, dtype=float).reshape(3)
    key = geom.key(origin, n_coeff)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    dots = _lead_dots(geom, origin, n_coeff)
    dots.setflags(write=False)
    with _LOCK:
        _CACHE[key] = dots
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return dots


_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
_CACHE_SIZE = 4  # a 306-channel matrix is 0.7 MB
_LOCK = threading.Lock()


def _combine(sums, ct, n1c1, n2c2, n1c2, n2c1, n1n2, b, ww) -> np.ndarray:
    """MNE's ``_fast_sphere_dot_r0`` for MEG, per pair, from the four sums (broadcasting):
    ``ww`` is the product of the two integration weights."""
    part1 = ct * n1c1 * n2c2
    part2 = n1c1 * n2c1 + n1c2 * n2c2
    r = (
        n1c1 * n2c2 * sums[0]
        + (2.0 * part1 - part2) * sums[1]
        + (n1n2 + part1 - part2) * sums[2]
        + (n1c2 - ct * n1c1) * (n2c1 - ct * n2c2) * sums[3]
    )
    # MNE's finishing touch, mu_0^2 / 4 pi / (r1 r2) = const * beta, and the weights
    r *= b
    r *= (_MEG_CONST / (_INT_RAD * _INT_RAD)) * ww
    return r


def _lead_dots(geom: MegGeometry, origin: np.ndarray, n_coeff: int) -> np.ndarray:
    n_pt = geom.w.size
    rr = geom.rmag - origin
    lr = np.sqrt(np.sum(rr * rr, axis=1))
    if np.any(lr <= 0):
        raise ValueError("a MEG integration point lies at the interpolation origin")
    rr = rr / lr[:, None]
    # points nearest the origin first: a tile of the pair matrix then spans a narrow range of
    # beta, and its series degree (set by its largest beta) suits all of its pairs
    perm = np.argsort(lr, kind="stable")
    rr, lr, cm, w = rr[perm], lr[perm], geom.cosmag[perm], geom.w[perm]
    ct_all = np.clip(rr @ rr.T, -1.0, 1.0)
    cr_all = cm @ rr.T  # [i, j]: cosmag_i . rhat_j
    cc_all = cm @ cm.T
    a = np.diagonal(cr_all).copy()  # cosmag . rhat of the point itself
    n_max = n_coeff - 1
    full = np.empty((n_pt, n_pt))  # weighted dot product of every pair of points
    # 1. every pair by tiles, with the identities (exact for |cos| <= _X_APART; the others
    #    are recomputed in step 2, so their values here do not matter)
    edges = list(range(0, n_pt, _TILE)) + [n_pt]
    with np.errstate(all="ignore"):
        for bi in range(len(edges) - 1):
            i0, i1 = edges[bi], edges[bi + 1]
            for bj in range(bi, len(edges) - 1):  # each unordered pair of tiles once
                j0, j1 = edges[bj], edges[bj + 1]
                b = (_INT_RAD * _INT_RAD) / (lr[i0:i1, None] * lr[None, j0:j1])
                ct = ct_all[i0:i1, j0:j1]
                deg = int(_pair_degrees(np.array([b.max()]), n_max)[0])
                sums = _meg_sums_apart(ct.ravel(), b.ravel(), deg).reshape((4,) + b.shape)
                r = _combine(
                    sums,
                    ct,
                    a[i0:i1, None],
                    a[None, j0:j1],
                    cr_all[i0:i1, j0:j1],
                    cr_all[j0:j1, i0:i1].T,
                    cc_all[i0:i1, j0:j1],
                    b,
                    w[i0:i1, None] * w[None, j0:j1],
                )
                full[i0:i1, j0:j1] = r
                if bj != bi:
                    full[j0:j1, i0:i1] = r.T
    # 2. pairs near each other's axis: the full recurrences, in blocks of similar degree
    iu, ju = np.nonzero(np.triu(np.abs(ct_all) > _X_APART))
    beta = (_INT_RAD * _INT_RAD) / (lr[iu] * lr[ju])
    deg = _pair_degrees(beta, n_max)
    order = np.argsort(deg, kind="stable")  # radix sort of small integers
    iu, ju, beta, deg = iu[order], ju[order], beta[order], deg[order]
    for s in range(0, iu.size, _TILE * _TILE):
        e = min(s + _TILE * _TILE, iu.size)
        i, j, b = iu[s:e], ju[s:e], beta[s:e]
        ct = ct_all[i, j]
        sums = _meg_sums(ct, b, int(deg[e - 1]))
        r = _combine(sums, ct, a[i], a[j], cr_all[i, j], cr_all[j, i], cc_all[i, j], b, w[i] * w[j])
        full[i, j] = r
        full[j, i] = r
    # back to the channel order (points grouped by channel), then sum over each channel's
    # points on both sides
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n_pt)
    starts = np.flatnonzero(np.r_[True, geom.owner[1:] != geom.owner[:-1]])
    rows = np.add.reduceat(full[inv], starts, axis=0)  # (C, P), columns still permuted
    dots = np.add.reduceat(rows[:, inv], starts, axis=1)
    # exactly symmetric, as MNE fills its matrix
    return np.triu(dots) + np.triu(dots, 1).T


def meg_mapping(
    info, bad_rows, *, origin, mode: str = "accurate"
) -> tuple[np.ndarray, np.ndarray] | None:
    """MNE's MEG interpolation for the MEG channels among ``bad_rows`` (rows of ``info``).

    Returns ``(bad, mapping)``: the bad MEG rows (sorted) and the (len(bad), C) weights,
    zero on the columns of bad and non-MEG channels. ``ValueError`` on invalid input;
    ``None`` when the helmet has more than MAX_POINTS integration points (use MNE's code).
    """
    from mne.utils.numerics import _reg_pinv

    if mode not in ("accurate", "fast"):
        raise ValueError(f"interpolation mode must be 'accurate' or 'fast', not {mode!r}")
    geom = meg_geometry(info)
    if geom.w.size > MAX_POINTS:
        return None
    n_info = len(info["ch_names"])
    is_bad = np.isin(geom.rows, np.asarray(list(bad_rows), dtype=int))
    bad = geom.rows[is_bad]
    if bad.size == 0:
        return bad, np.zeros((0, n_info))
    good_i = np.flatnonzero(~is_bad)
    if good_i.size == 0:
        raise ValueError("every MEG channel is bad: nothing to interpolate from")
    dots = lead_dots(geom, origin, 50 if mode == "fast" else 100)
    self_dots = dots[np.ix_(good_i, good_i)]
    cross = dots[np.ix_(np.flatnonzero(is_bad), good_i)]
    # MNE's _compute_mapping_matrix without projectors (the kept Info has none)
    whit = 1.0 / np.sqrt(geom.noise_var[good_i])
    wd = self_dots * whit[:, None] * whit[None, :]
    s = np.linalg.svd(wd, compute_uv=False, hermitian=True)
    varexp = np.cumsum(s)
    varexp /= varexp[-1]
    rank = int(np.flatnonzero(varexp >= 1.0 - _MISS)[0] + 1)
    inv, _, _ = _reg_pinv(wd, reg=0, rank=rank)
    inv_w = inv * whit[:, None] * whit[None, :]
    out = np.zeros((bad.size, n_info))
    out[:, geom.rows[good_i]] = cross @ inv_w
    return bad, out
