"""Speed options of the models: bf16 autocast and torch.compile, chosen in the model config.

``precision`` (``TokenizerConfig`` / ``BrainOmniConfig``, so ``model.precision=bf16`` in a
training config):

- ``"fp32"`` (default): the model adds no autocast. The trainer's own autocast still applies
  (bf16 on CUDA).
- ``"bf16"``: the training forward runs under ``torch.autocast(<device>, bfloat16)``. On CPUs
  with AMX or AVX512-BF16 the convolutions, LSTM and matrix products then use bf16 kernels
  (oneDNN's AMX ``brg_matmul``); elsewhere they are emulated (correct but slow: prefer
  ``"auto"``). Losses, the RVQ and the RMSNorm statistics stay float32. On CPU, BrainOmni
  also keeps its residual stream in bf16 and its blocks take ``layers.py``'s bf16 path
  (``fast_bf16_path``): the RMSNorm weight folded into the next matrix product and the norm
  in one autograd op, RoPE on q and k at once, dropout masks from 16 random bits, attention
  with dropout written out in bf16. Eager elementwise passes, not the matrix products,
  dominate a CPU step once these run on AMX; these ops cut them (2.1x per block against
  1.7x for autocast alone, measured in CPU time).
- ``"auto"``: ``"bf16"`` where the device computes bf16 natively (CUDA with bf16, a CPU with
  AMX-BF16 or AVX512-BF16), else ``"fp32"``.

``compile`` (default False): ``nn.Module.compile()`` of the SEANet encoder/decoder (tokenizer)
or of every criss-cross block (BrainOmni), in place so parameter names are unchanged. On the
AMX CPU a compiled bf16 criss-cross block (autocast alone) was slower than the eager one
(0.59 s against 0.50 s forward + backward, 1 thread, after 144 s of compilation), so the
eager bf16 path above is the CPU fast path. The
first steps pay the compilation (tens of seconds on CPU, again for each new batch shape
until shapes are marked dynamic); it needs a C++ compiler on CPU. ``bench_models.py``
reports the compile time separately from the step time.

Only the training ``forward`` uses ``precision``: ``tokenize``/``encode``/``reconstruct``
run in the caller's precision, so stored token indices do not depend on this option.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "auto")


def check_speed_options(precision: object, compile: object) -> None:
    """Raise ``ValueError`` naming the field and the fix for an invalid option."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile={compile!r}: use true or false")


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 matrix products natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = torch.cpu
        amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        return bool(amx or avx512_bf16)
    return False


def resolved_precision(precision: str, device_type: str) -> str:
    """``"fp32"`` or ``"bf16"`` for ``precision`` on ``device_type``."""
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return precision


def autocast(precision: str, device_type: str):
    """The autocast context of ``precision`` on ``device_type`` (a no-op for fp32)."""
    if resolved_precision(precision, device_type) == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def fast_bf16_path(precision: str, device_type: str) -> bool:
    """Whether the model runs its bf16 CPU path (``layers.fast_bf16``): bf16 activations
    between the blocks, fused RMSNorm/RoPE/dropout."""
    return device_type == "cpu" and resolved_precision(precision, device_type) == "bf16"


def maybe_compile(modules: list[nn.Module], enabled: bool) -> None:
    """Compile each module in place (``nn.Module.compile``): names and state dicts unchanged."""
    if enabled:
        for m in modules:
            m.compile()
