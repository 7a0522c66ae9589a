"""Speed options of the models: bf16 autocast and torch.compile, chosen in the model config.

``precision`` (``TokenizerConfig`` / ``BrainOmniConfig``, so ``model.precision=bf16`` in a
training config):

- ``"fp32"`` (default): the model adds no autocast. The trainer's own autocast still applies
  (bf16 on CUDA).
- ``"bf16"``: the training forward runs under ``torch.autocast(<device>, bfloat16)``. On CPUs
  with AMX or AVX512-BF16 the convolutions, LSTM and matrix products then use bf16 kernels
  (oneDNN's AMX ``brg_matmul``); elsewhere they are emulated (correct but slow: prefer
  ``"auto"``). Losses, the RVQ and the RMSNorm statistics stay float32 (on BrainOmni's bf16
  CPU path the norm is accumulated in float32, rounded to bf16). On CPU, BrainOmni
  also keeps its residual stream in bf16 and its blocks take ``bf16_cpu.py``'s bf16 path
  (``fast_bf16_path``). Once the products run on AMX, PyTorch's eager elementwise passes
  dominate a CPU step, so that path computes the same function in fewer passes:

  - with a C compiler (``cpu_kernels.py``, built at first use, the default): fused kernels
    in ``cpu_kernels.c`` do each elementwise step in one pass each way - the qkv bias +
    the q/k/v heads' layout + RoPE (also reading the spatial attention's sequences straight
    from the block's (B, S, W) token rows and writing them back, so no transposed copies),
    scale + softmax + dropout, the RMS scale with the residual stream's gradient added in
    its backward, bias + SELU in place, bias + dropout + residual add, the attention
    outputs' biases + concatenation + residual add, cross-entropy from the bf16 logits. Dropout masks come from a counter-based generator (splitmix64 of the
    element index and a per-call seed from torch's generator) and are recomputed in the
    backward, not stored;
  - without one (or ``BRAINOMNI_CPU_KERNELS=0``), PyTorch ops: each RMSNorm weight folded
    into the next product (``W (w x) = (W diag(w)) x``, also on the kernel path), the norm
    one op with a two-pass backward (``_RMSScale``); q, k, v written once into the
    (B, H, T, Dh) layout with RoPE on the way (``_QKVHeads``: the qkv rows of each q/k head
    reordered [even | odd] by ``halves_order``, so RoPE rotates two contiguous halves);
    dropout masks as int16 bit patterns applied by a bitwise AND (``keep_bits``,
    ``_DropBits``); attention with dropout written out in bf16 (CPU SDPA upcasts to float32
    for dropout); the spatial attention's 16-long softmax by its own op (``_ShortSoftmax``);
  - either way the prediction head runs only at the masked positions (half its products).

  Measured (``tests/benchmarks/bench_models.py --threads 1``, interleaved with the plain
  float32 formulation in one process, this 2-core AMX machine at load ~1): BrainOmni tiny
  from indices 4.2-4.4x plain with the C kernels (1.73-1.88 s against 7.26-8.27 s), 2.7x
  with the PyTorch ops (2.95x with ``compile=True``'s compiled bias + SELU); the tokenizer
  2.4x (its attention layers take the same kernels). See README "Benchmarks".
- ``"auto"``: ``"bf16"`` where the device computes bf16 natively (CUDA with bf16, a CPU with
  AMX-BF16 or AVX512-BF16), else ``"fp32"``.

``compile`` (default False): ``nn.Module.compile()`` of the SEANet encoder/decoder (tokenizer)
or of every criss-cross block (BrainOmni), in place so parameter names are unchanged. On the
bf16 CPU path BrainOmni's blocks are not traced (``torch.compiler.disable``): an
inductor-compiled bf16 block was slower than the eager one (0.59 s against 0.50 s forward +
backward, 1 thread, after 144 s of compilation), and inductor's CPU softmax over the
160-long attention rows was 2-4x slower than eager. There the C kernels above are used
whatever ``compile`` says; only where they are unavailable does ``compile=True`` compile one
elementwise kernel, the first FFN bias + SELU (``bf16_cpu._BiasSELU``: ``addmm`` + the bf16
``elu`` kernel 47 ms, ``mm`` + the compiled kernel 18 ms per block, compiled in about 10 s).
The first steps pay the compilation (again for each new batch shape until shapes are marked
dynamic); it needs a C++ compiler on CPU. ``bench_models.py --compile-bf16`` times that
variant and reports the compile time separately from the step time.

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
    """Whether the model runs its bf16 CPU path (``bf16_cpu.fast_bf16``): bf16 activations
    between the blocks, fused RMSNorm/RoPE/dropout."""
    return device_type == "cpu" and resolved_precision(precision, device_type) == "bf16"


def maybe_compile(modules: list[nn.Module], enabled: bool) -> None:
    """Compile each module in place (``nn.Module.compile``): names and state dicts unchanged."""
    if enabled:
        for m in modules:
            m.compile()
