"""Fused bf16 CPU kernels (``cpu_kernels.c``), built at first use, called through ctypes.

Why C and not PyTorch ops: on the bf16 CPU path of BrainOmni's blocks (``bf16_cpu.py``) the
matrix products run on AMX and PyTorch's eager elementwise kernels take most of a training
step. Each of those is one or more passes over the activations with its own conversions
(its bf16 ``softmax`` over 256 x 160 x 160 took 8 ms, ``int64.random_`` for the dropout
bits of the same weights 8 ms, ``selu`` over 10 240 x 1 024 19 ms, one thread), and
inductor-compiled versions were measured no faster in the step (speed.py). The kernels
in ``cpu_kernels.c`` do each fused step in one pass: softmax + dropout, the q/k/v heads'
layout + RoPE, the RMS scale, bias + SELU in place, bias + dropout + residual add, with
their backwards. Their dropout masks are recomputed from a counter-based generator
(splitmix64 of the element index and a per-call seed drawn from torch's default
generator), so ``torch.manual_seed`` still fixes a run and no mask is stored.

Build: ``$CC`` (else ``cc``) ``-O3 -march=native -fPIC -shared -fopenmp`` (without
``-fopenmp`` where the compiler lacks it) into ``_cache_dir()`` (``~/.cache/brainomni/
cpu-kernels`` by default), named by the CPU model's instruction sets (``_cpu_tag``) and a
hash of the source, compiler and flags, written to a temporary name and renamed, so
concurrent processes and reruns are safe; about a second. Builds of older sources are
removed. ``-march=native``: the library is built for the CPU it runs on (AVX-512 and
AVX512-BF16's rounding instruction here, AVX2 or SSE elsewhere), one per CPU model in a
cache directory that several share.
``BRAINOMNI_CPU_KERNELS_MARCH`` overrides ``native`` (the tests also build for
``x86-64-v2``, SSE4.2 only, to check the paths other CPUs take). Where no C
compiler works, ``kernels()`` returns ``None`` (one warning) and the blocks keep the PyTorch
ops of ``bf16_cpu.py``. ``BRAINOMNI_CPU_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
ABI_VERSION = 7
MAX_ROW = 16384  # cpu_kernels.c's MAX_ROW: the longest softmax row a kernel takes
MAX_HEAD = 1024  # cpu_kernels.c's MAX_HEAD: the widest attention head
_I64, _U64, _U32, _F32, _INT, _P = (
    ctypes.c_int64,
    ctypes.c_uint64,
    ctypes.c_uint32,
    ctypes.c_float,
    ctypes.c_int,
    ctypes.c_void_p,
)
_SIGNATURES = {
    "softmax_dropout_fwd": (None, [_P, _P, _P, _I64, _I64, _U64, _U32, _F32, _F32, _INT]),
    "softmax_dropout_bwd": (None, [_P, _P, _P, _P, _I64, _I64, _INT, _F32, _F32, _INT]),
    "qkv_heads_fwd": (None, [_P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _INT]),
    "qkv_heads_bwd": (
        _INT,
        [_P, _P, _P, _INT, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _INT],
    ),
    "merge_heads": (None, [_P, _P, _I64, _I64, _I64, _I64, _I64, _INT, _INT]),
    "rms_fwd": (None, [_P, _P, _P, _I64, _I64, _F32, _INT]),
    "rms_bwd": (None, [_P, _P, _P, _P, _P, _I64, _I64, _INT]),
    "bias_selu_fwd": (None, [_P, _P, _I64, _I64, _INT]),
    "bias_selu_bwd": (_INT, [_P, _P, _P, _P, _I64, _I64, _INT]),
    "bias_dropout_add_fwd": (None, [_P, _P, _P, _P, _I64, _I64, _U64, _U32, _F32, _INT]),
    "bias_dropout_add_bwd": (_INT, [_P, _P, _P, _I64, _I64, _U64, _U32, _F32, _INT]),
    "xent_fwd": (None, [_P, _P, _P, _P, _P, _I64, _I64, _INT]),
    "xent_bwd": (None, [_P, _P, _P, _P, _P, _I64, _I64, _INT]),
    "residual_cat_fwd": (None, [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _INT]),
    "column_sums": (_INT, [_P, _P, _I64, _I64, _INT]),
    "brainomni_kernels_version": (_INT, []),
}


def _cache_dir() -> Path:
    """``$BRAINOMNI_CACHE_DIR/cpu-kernels``, else ``$XDG_CACHE_HOME/brainomni/cpu-kernels``
    (``~/.cache/...``): next to the filter kernels' cache (``signal/design.py``)."""
    d = os.environ.get("BRAINOMNI_CACHE_DIR")
    if d:
        return Path(d) / "cpu-kernels"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "brainomni" / "cpu-kernels"


def _cpu_tag() -> str:
    """A short hash of this CPU's instruction sets (``/proc/cpuinfo``'s flags, else the
    machine name): ``-march=native`` builds differ per CPU model, so a cache directory
    shared by several (a cluster's home directory) keeps one build per model and never
    hands one model's build to another (which could die on an illegal instruction)."""
    ident = platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", errors="replace") as f:
        for line in f:
            if line.startswith(("flags", "Features")):  # x86, ARM
                ident += line
                break
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def _prune(keep: Path, tag: str) -> None:
    """Remove this CPU model's builds of other sources or flags (a mapped library stays
    valid when its file is unlinked, so a process still using one is unaffected)."""
    for old in keep.parent.glob(f"cpu_kernels-{tag}-*.so"):
        if old != keep:
            with contextlib.suppress(OSError):
                old.unlink()


def _compile(cc: str, flags: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cc, *flags, "-o", tmp, str(SOURCE), "-lm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build() -> Path:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH (set CC)")
    march = os.environ.get("BRAINOMNI_CPU_KERNELS_MARCH", "native")
    base = ["-O3", f"-march={march}", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno"]
    src = SOURCE.read_bytes()
    tag = _cpu_tag()
    last: Exception | None = None
    for flags in (base + ["-fopenmp"], base):
        key = hashlib.sha256(src + "\0".join([cc, *flags]).encode()).hexdigest()[:16]
        out = _cache_dir() / f"cpu_kernels-{tag}-{key}.so"
        if out.exists():
            return out
        try:
            _compile(cc, flags, out)
            _prune(out, tag)
            return out
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            last = e
    err = getattr(last, "stderr", "") or str(last)
    raise RuntimeError(f"{cc} could not build {SOURCE.name}: {err.strip()[-500:]}")


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, or ``None`` (kernels off, no compiler, a failed build)."""
    if os.environ.get("BRAINOMNI_CPU_KERNELS", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        if lib.brainomni_kernels_version() != ABI_VERSION:
            raise RuntimeError("stale kernel library (ABI version mismatch)")
    except (RuntimeError, OSError, AttributeError) as e:
        log.warning(
            "bf16 CPU kernels unavailable, using PyTorch ops (slower): %s. Install a C "
            "compiler (e.g. apt install gcc) or set CC; BRAINOMNI_CPU_KERNELS=0 silences this.",
            e,
        )
        return None
    return lib


def available() -> bool:
    return kernels() is not None


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _opt(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads() -> int:
    return torch.get_num_threads()


def draw_seed() -> int:
    """A 64-bit seed for one kernel call's dropout draws, from torch's default generator."""
    return int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) & (2**64 - 1)


def threshold(p: float) -> int:
    """``keep iff u >= t`` for 15 random bits u: ``t = round(p 2^15)``; P(keep) = 1 - t/2^15."""
    t = round(p * 32768)
    if not 0 < t < 32768:
        raise ValueError(f"dropout p={p} must be in [2^-16, 1 - 2^-16)")
    return t


def keep_scale(t: int) -> float:
    return 32768 / (32768 - t)


# ---------------------------------------------------------------------- autograd functions
def _bf16c(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        raise TypeError(f"cpu kernels take bf16 CPU tensors, got {x.dtype} on {x.device}")
    return x.contiguous()


class SoftmaxDropout(torch.autograd.Function):
    """``dropout(softmax(alpha * s, -1))``, the kept weights scaled by ``1/P(keep)``
    (``p == 0``: the softmax). Saves the softmax and the dropped weights; the backward reads
    the mask back from the dropped weights (zero where dropped; where the softmax weight is
    0 its gradient is 0 either way)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, p: float, alpha: float = 1.0) -> torch.Tensor:
        s = _bf16c(s)
        L = s.shape[-1]
        if L > MAX_ROW:
            raise ValueError(f"softmax rows of {L} exceed the kernel's {MAX_ROW}")
        rows = s.numel() // L
        prob = torch.empty_like(s)
        t = threshold(p) if p > 0.0 else 0
        dropped = torch.empty_like(s) if t else prob
        ctx.ks, ctx.alpha = (keep_scale(t) if t else 1.0), float(alpha)
        kernels().softmax_dropout_fwd(
            _ptr(s),
            _ptr(prob),
            _ptr(dropped),
            rows,
            L,
            draw_seed() if t else 0,
            t,
            ctx.ks,
            ctx.alpha,
            _threads(),
        )
        ctx.masked = bool(t)
        ctx.save_for_backward(prob, dropped)
        return dropped

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        prob, dropped = ctx.saved_tensors
        g = _bf16c(g)
        L = g.shape[-1]
        ds = torch.empty_like(g)
        kernels().softmax_dropout_bwd(
            _ptr(g),
            _ptr(prob),
            _ptr(dropped),
            _ptr(ds),
            g.numel() // L,
            L,
            int(ctx.masked),
            ctx.ks,
            ctx.alpha,
            _threads(),
        )
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
        if Dh > MAX_HEAD or (c is not None and Dh % 2):
            raise ValueError(f"head width {Dh} must be <= {MAX_HEAD}, and even with RoPE")
        if c is not None:
            c, s = _bf16c(c), _bf16c(s)
        b32 = bias.detach().float().contiguous() if bias is not None else None
        q, k, v = (qkv.new_empty(B, H, T, Dh) for _ in range(3))
        kernels().qkv_heads_fwd(
            _ptr(qkv),
            _opt(b32),
            _opt(c),
            _opt(s),
            _ptr(q),
            _ptr(k),
            _ptr(v),
            B,
            T,
            H,
            Dh,
            inner,
            _threads(),
        )
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
        if kernels().qkv_heads_bwd(
            *(_opt(g) for g in gs),
            transposed,
            _opt(c),
            _opt(s),
            _ptr(out),
            _opt(gb),
            B,
            T,
            H,
            Dh,
            ctx.inner,
            _threads(),
        ):
            raise MemoryError("qkv_heads_bwd: out of memory for the bias partial sums")
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
        kernels().merge_heads(_ptr(x), _ptr(out), B, T, H, Dh, inner, 0, _threads())
        ctx.shape, ctx.inner = x.shape, inner
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g = _bf16c(g)
        B, H, T, Dh = ctx.shape
        out = g.new_empty(ctx.shape)
        kernels().merge_heads(_ptr(g), _ptr(out), B, T, H, Dh, ctx.inner, 1, _threads())
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
    kernels().rms_fwd(_ptr(x), _ptr(y), _ptr(rstd), x.numel() // D, D, eps, _threads())
    ctx.save_for_backward(x, rstd)
    return y


def _rms_backward(g, gres, x, rstd) -> torch.Tensor:
    g = _bf16c(g)
    gres = _bf16c(gres) if gres is not None else None
    D = x.shape[-1]
    dx = torch.empty_like(x)
    kernels().rms_bwd(
        _ptr(g), _opt(gres), _ptr(x), _ptr(rstd), _ptr(dx), x.numel() // D, D, _threads()
    )
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
        b32 = b.detach().float().contiguous()
        kernels().bias_selu_fwd(_ptr(h), _ptr(b32), h.numel() // F, F, _threads())
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
        if kernels().bias_selu_bwd(
            _ptr(g), _ptr(y), _ptr(gh), _ptr(gb), y.numel() // F, F, _threads()
        ):
            raise MemoryError("bias_selu_bwd: out of memory for the bias partial sums")
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
        t = threshold(p) if p > 0.0 else 0
        ctx.seed, ctx.t = (draw_seed() if t else 0), t
        ctx.scale = keep_scale(t) if t else 1.0
        ctx.b_dtype = b.dtype
        b32 = b.detach().float().contiguous()
        out = torch.empty_like(x)
        kernels().bias_dropout_add_fwd(
            _ptr(x),
            _ptr(f),
            _ptr(b32),
            _ptr(out),
            x.numel() // D,
            D,
            ctx.seed,
            t,
            ctx.scale,
            _threads(),
        )
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g = _bf16c(g)
        D = g.shape[-1]
        gf = torch.empty_like(g)
        gb = torch.empty(D, dtype=torch.float32)
        if kernels().bias_dropout_add_bwd(
            _ptr(g), _ptr(gf), _ptr(gb), g.numel() // D, D, ctx.seed, ctx.t, ctx.scale, _threads()
        ):
            raise MemoryError("bias_dropout_add_bwd: out of memory for the bias partial sums")
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
        kernels().residual_cat_fwd(
            _ptr(x),
            _ptr(a),
            _ptr(b),
            _ptr(ba.detach().float().contiguous()),
            _ptr(bb.detach().float().contiguous()),
            _ptr(out),
            N,
            h1,
            h2,
            _threads(),
        )
        ctx.dims, ctx.dtypes = (N, h1, h2), (ba.dtype, bb.dtype)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        N, h1, h2 = ctx.dims
        g = _bf16c(g)
        g2 = g.view(N, h1 + h2)
        sums = torch.empty(h1 + h2, dtype=torch.float32)
        if kernels().column_sums(_ptr(g2), _ptr(sums), N, h1 + h2, _threads()):
            raise MemoryError("column_sums: out of memory for the partial sums")
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
        kernels().xent_fwd(
            _ptr(logits), _ptr(labels), _ptr(loss), _ptr(lse), _ptr(am), R, K, _threads()
        )
        ctx.save_for_backward(logits, labels, lse)
        ctx.mark_non_differentiable(am)
        return loss, am

    @staticmethod
    def backward(ctx, g: torch.Tensor, _g_am):
        logits, labels, lse = ctx.saved_tensors
        g = g.float().contiguous()
        R, K = logits.shape
        dx = torch.empty_like(logits)
        kernels().xent_bwd(
            _ptr(logits), _ptr(labels), _ptr(lse), _ptr(g), _ptr(dx), R, K, _threads()
        )
        return dx, None
