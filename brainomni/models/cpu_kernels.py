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
ops of ``bf16_cpu.py``. ``BRAINOMNI_CPU_KERNELS=0`` turns the kernels off. The autograd
functions over the kernels are in ``cpu_ops.py``.
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


def call(name: str, *args) -> None:
    """Kernel ``name`` of the loaded library on ``args``: tensors as their storage pointers
    (the callers pass contiguous ones), ``None`` as NULL, this process's torch thread count
    appended (the kernels' OpenMP width). The kernels that return a status (those with
    per-thread partial sums) return -1 when they cannot allocate them."""
    fn = getattr(kernels(), name)
    status = fn(*(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args), threads())
    if status:
        raise MemoryError(f"{name}: out of memory for its per-thread partial sums")


def threads() -> int:
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


def dropout(p: float) -> tuple[int, float, int]:
    """A kernel call's dropout arguments: threshold, ``1/P(keep)`` and seed (``0, 1.0, 0``
    for ``p == 0``: no dropout)."""
    if p <= 0.0:
        return 0, 1.0, 0
    t = threshold(p)
    return t, keep_scale(t), draw_seed()
