"""BrainOmni (stage 2): masked token prediction over the tokenizer's source x time grid.

Shape legend: B batch, C channels, T samples, S latent sources (16), W latent steps
(8 per 2-s window; 30 s with overlap 0.25 -> 20 windows -> 160 steps), D tokenizer features
(256), E model width (lm_dim), Q codebook layers (4), K codebook size (512).

Trains either from raw signals (the frozen tokenizer runs in eval/no-grad) or from
precomputed codebook indices (B, S, W, Q); the quantised feature is then the sum of the
selected codebook vectors, which is exactly what the tokenizer returns, so both paths give
the same loss for the same masks. Names follow the official ``brainomni/model.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from brainomni.models import cpu_kernels, cpu_ops
from brainomni.models.layers import CrissCrossBlock, RMSNorm
from brainomni.models.speed import (
    autocast,
    check_speed_options,
    fast_bf16_path,
    maybe_compile,
)
from brainomni.models.tokenizer import BrainTokenizer, TokenizerConfig

DEDICATED_MASK_PROBABILITY = 0.8  # of masked positions: 80 % mask token, 20 % random token


@dataclass(frozen=True)
class BrainOmniConfig:
    lm_dim: int = 256
    lm_head: int = 8
    lm_depth: int = 12
    lm_dropout: float = 0.1
    mask_ratio: float = 0.5
    overlap_ratio: float = 0.25
    num_quantizers_used: int = 4
    precision: str = "fp32"  # "bf16"/"auto": bf16 autocast over the blocks (see speed.py)
    compile: bool = False  # torch.compile every criss-cross block (see speed.py)

    def __post_init__(self) -> None:
        check_speed_options(self.precision, self.compile)
        if self.lm_dim % 2 or self.lm_head % 2 or (self.lm_dim // 2) % (self.lm_head // 2):
            raise ValueError(f"lm_dim={self.lm_dim}/lm_head={self.lm_head} must split in halves")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be in (0, 1)")
        if self.lm_depth < 2:
            raise ValueError("lm_depth must be >= 2 (encode() drops the last block)")


SIZES = {
    "tiny": BrainOmniConfig(lm_dim=256, lm_head=8, lm_depth=12),
    "base": BrainOmniConfig(lm_dim=512, lm_head=16, lm_depth=12),
}


class BrainOmni(nn.Module):
    """BrainOmni ``tiny`` (8,424,704 trainable parameters) or ``base`` (32,707,328).

    ``tokenizer`` is frozen (no gradients, always in eval mode) and not counted; by default
    a fresh ``BrainTokenizer()`` (load trained weights into ``.tokenizer``).
    """

    def __init__(
        self,
        size: str = "tiny",
        *,
        tokenizer: BrainTokenizer | None = None,
        tokenizer_config: TokenizerConfig | None = None,
        **overrides,
    ) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"size={size!r}: choose one of {sorted(SIZES)}")
        cfg = replace(SIZES[size], **overrides)
        self.config = cfg
        self.tokenizer = tokenizer if tokenizer is not None else BrainTokenizer(tokenizer_config)
        self.tokenizer.requires_grad_(False)
        self.tokenizer.eval()
        tcfg = self.tokenizer.config
        if cfg.num_quantizers_used > tcfg.num_quantizers:
            raise ValueError("num_quantizers_used exceeds the tokenizer's num_quantizers")
        n_dim, E = tcfg.n_dim, cfg.lm_dim
        self.codebook_size = tcfg.codebook_size
        self.mask_token = nn.Parameter(torch.randn(n_dim))
        self.projection = nn.Linear(n_dim, E) if n_dim != E else nn.Identity()
        self.blocks = nn.ModuleList(
            CrissCrossBlock(E, cfg.lm_head, cfg.lm_dropout) for _ in range(cfg.lm_depth)
        )
        self.predict_head = nn.Linear(E, cfg.num_quantizers_used * tcfg.codebook_size)
        for name, m in self.named_modules():
            if not name.startswith("tokenizer"):
                _init_weights(m)
        maybe_compile(list(self.blocks), cfg.compile)
        for block in self.blocks:  # on the bf16 CPU path: compiled elementwise kernels
            block.compiled_kernels = cfg.compile

    def train(self, mode: bool = True) -> BrainOmni:
        super().train(mode)
        self.tokenizer.eval()  # frozen: no EMA updates, no corruption, no dropout
        return self

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ features
    def tokens(
        self,
        x: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        sensor_type: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantised features (B, S, W, D) and indices (B, S, W, Q) from signals or indices."""
        if indices is not None:
            if indices.ndim != 4:
                raise ValueError(f"indices must be (B, S, W, Q), got {tuple(indices.shape)}")
            with torch.no_grad():
                feats = self.tokenizer.quantizer.lookup(indices)
            return feats, indices.long()
        if x is None or pos is None or sensor_type is None:
            raise ValueError("pass x, pos and sensor_type, or precomputed indices=")
        return self.tokenizer.tokenize(x, pos, sensor_type, mask, self.config.overlap_ratio)

    def _embed(self, feats_BSWD: torch.Tensor) -> torch.Tensor:
        S = feats_BSWD.shape[1]
        neuro = self.tokenizer.encoder.neuros.detach().to(feats_BSWD.dtype).view(1, S, 1, -1)
        return self.projection(feats_BSWD + neuro)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        x: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        sensor_type: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masked-token objective. Give signals ``x``/``pos``/``sensor_type`` (30 s in the paper)
        or ``indices`` (B, 16, W, 4). ``generator`` drives the masking draws, so two calls with
        equally seeded generators mask the same positions.

        Returns ``loss`` (mean cross-entropy over masked positions x Q layers), ``acc_all`` and
        ``acc_{q}`` per layer. The blocks and the head run under bf16 autocast with
        ``precision="bf16"`` (``speed.py``); the cross-entropy is float32 either way.
        """
        feats, labels = self.tokens(x, pos, sensor_type, mask, indices=indices)
        B, S, W, D = feats.shape
        dev = feats.device
        keep = torch.rand(B, S, W, device=dev, generator=generator) > self.config.mask_ratio
        perm = torch.randperm(B * S * W, device=dev, generator=generator)
        u = torch.rand(B, S, W, device=dev, generator=generator)
        random_tokens = feats.reshape(-1, D)[perm].view(B, S, W, D)
        h = torch.where(keep.unsqueeze(-1), feats, random_tokens)
        not_mask_token = (keep.float() + u) > DEDICATED_MASK_PROBABILITY  # keep, or 20 % random
        h = torch.where(not_mask_token.unsqueeze(-1), h, self.mask_token.to(h.dtype))
        Q = self.config.num_quantizers_used
        with autocast(self.config.precision, dev.type):
            h = self._embed(h)
            if fast_bf16_path(self.config.precision, dev.type):
                h = h.to(torch.bfloat16)  # a bf16 residual stream (bf16_cpu.py's path)
            rope = self.blocks[0].time_attn.rope_tables(W, dev)  # shared by every block
            for block in self.blocks:
                h = block(h, rope)
            # the loss needs logits at the masked positions only: the head runs on those rows
            # (half of its products, no gather from the full logits; the same rows' values)
            sel = ~keep
            sel_logits = self.predict_head(h[sel]).view(-1, Q, self.codebook_size)  # X Q K
        sel_labels = labels[..., :Q][sel]  # X Q
        if fast_bf16_path(self.config.precision, dev.type) and cpu_kernels.available():
            # float32 cross-entropy read straight from the bf16 logits (no float32 copy)
            rows, top = cpu_ops.CrossEntropyRows.apply(
                sel_logits.reshape(-1, self.codebook_size), sel_labels.reshape(-1)
            )
            loss, top = rows.mean(), top.view(-1, Q)
        else:
            sel_logits = sel_logits.float()  # X Q K
            loss = F.cross_entropy(
                sel_logits.reshape(-1, sel_logits.shape[-1]), sel_labels.reshape(-1)
            )
            top = sel_logits.argmax(-1)
        acc = (top == sel_labels).float().mean(0).detach()
        out = {"loss": loss, "acc_all": acc.mean()}
        out.update({f"acc_{q}": acc[q] for q in range(Q)})
        return out

    # ------------------------------------------------------------------ downstream
    def encode(
        self,
        x: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        sensor_type: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Downstream features (B, 16, W, lm_dim): no masking, all blocks but the last,
        L2-normalised."""
        feats, _ = self.tokens(x, pos, sensor_type, mask, indices=indices)
        h = self._embed(feats)
        rope = self.blocks[0].time_attn.rope_tables(h.shape[2], h.device)
        for block in self.blocks[:-1]:
            h = block(h, rope)
        return F.normalize(h, p=2.0, dim=-1, eps=1e-6)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, RMSNorm):
        nn.init.ones_(m.weight)
