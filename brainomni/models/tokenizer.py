"""BrainTokenizer (stage 1): any sensor layout -> 16 latent sources -> 4 RVQ codes per step.

Shape legend: B batch, C channels (sensors), T samples at 256 Hz, N 2-s windows, L window
samples (512), W latent steps (N * 8), S latent sources (16), D features (256),
Q quantizer layers (4), R real (unpadded) channels of a batch, H heads.

Inputs everywhere: ``x`` (B, C, T) signals, ``pos`` (B, C, 6) position + orientation,
``sensor_type`` (B, C) int (EEG 0, MAG 1, GRAD 2) and an optional ``mask`` (B, C) bool that
is True for real channels of a padded batch. Module and parameter names follow the official
code (``braintokenizer/model.py``, ``model_utils/module.py``); see ``convert.py``.

Size: the official module tree in one file (sensor embedding, encoder, quantiser, decoder
and the model with its loss), so that converted official weights map name for name; the
initialisations live in ``tokenizer_init.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from brainomni.models.layers import FeedForward, RMSNorm
from brainomni.models.losses import reconstruction_losses, total_loss, zscore
from brainomni.models.seanet import SEANetDecoder, SEANetEncoder
from brainomni.models.speed import autocast, check_speed_options, maybe_compile
from brainomni.models.tokenizer_init import init_official, init_sharp

N_SENSOR_TYPES = 3  # EEG 0, MAG 1, GRAD 2 (brainomni.records)
INITS = ("official", "sharp")


@dataclass(frozen=True)
class TokenizerConfig:
    """The paper's tokenizer (official ``braintokenizer.yaml``); override fields to shrink it."""

    window_length: int = 512  # samples (2 s at 256 Hz)
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 4, 2)
    kernel_size: int = 5
    last_kernel_size: int = 5
    n_dim: int = 256
    n_neuro: int = 16  # latent sources
    n_head: int = 4
    dropout: float = 0.0  # attention dropout (training only)
    codebook_size: int = 512
    num_quantizers: int = 4
    ema_decay: float = 0.99
    ema_eps: float = 1e-6  # Laplace smoothing of the EMA counts
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0  # EMA count below which a code is replaced
    commitment_weight: float = 0.25
    rotation_trick: bool = True
    init: str = "official"  # "sharp": fan-in init, SEANet biases 0, sharp attention keys
    phase_weight: float = 0.5  # weight of the phase L1 in the objective (official 0.5)
    channel_drop_ratio: float = 0.25  # channels hidden from the encoder in training (>= 1)
    noise_std: float = 0.1  # Gaussian noise on the encoder input in training
    sync_codebook: bool | None = None  # all-reduce EMA statistics; None = if distributed
    precision: str = "fp32"  # "bf16": bf16 autocast in forward() (see speed.py)
    compile: bool = False  # torch.compile the SEANet encoder and decoder (see speed.py)

    def __post_init__(self) -> None:
        check_speed_options(self.precision, self.compile)
        hop = 1
        for r in self.ratios:
            hop *= r
        if self.window_length % hop:
            raise ValueError(f"window_length={self.window_length} must be a multiple of {hop}")
        if self.n_dim % self.n_head:
            raise ValueError(f"n_dim={self.n_dim} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.channel_drop_ratio < 1.0:
            raise ValueError(f"channel_drop_ratio={self.channel_drop_ratio} must be in [0, 1)")
        if self.num_quantizers < 1 or self.codebook_size < 2:
            raise ValueError("num_quantizers must be >= 1 and codebook_size >= 2")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} must be one of {INITS}")
        if not self.phase_weight >= 0.0:
            raise ValueError(f"phase_weight={self.phase_weight} must be >= 0")

    @property
    def hop(self) -> int:
        """Samples per latent step (64)."""
        return self.window_length // self.steps_per_window

    @property
    def steps_per_window(self) -> int:
        """Latent steps per window (8)."""
        hop = 1
        for r in self.ratios:
            hop *= r
        return self.window_length // hop


class BrainSensorModule(nn.Module):
    """Sensor encoder: (B, C, 6) positions + (B, C) types -> (B, C, D) sensor embeddings."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sensor_embedding_layer = nn.Embedding(N_SENSOR_TYPES, dim)
        self.pos_embedding_layer = nn.Sequential(
            nn.Linear(6, dim // 2), nn.SELU(), nn.Linear(dim // 2, dim)
        )
        self.aggregate_mlp = FeedForward(dim, 0.0)
        self.norm = RMSNorm(dim)

    def forward(self, pos: torch.Tensor, sensor_type: torch.Tensor) -> torch.Tensor:
        x = self.pos_embedding_layer(pos)
        x = x + self.sensor_embedding_layer(sensor_type).to(x.dtype)
        return self.norm(x + self.aggregate_mlp(x))


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(..., T, H*Dh) -> (..., H, T, Dh)."""
    return x.unflatten(-1, (n_head, -1)).transpose(-3, -2)


class BackWardSolution(nn.Module):
    """Compression: the S source queries attend over the channels' features (per step)."""

    def __init__(self, dim: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        q_SD: torch.Tensor,
        k_XCD: torch.Tensor,
        x_XCD: torch.Tensor,
        key_mask_XC: torch.Tensor | None,
    ) -> torch.Tensor:
        X = k_XCD.shape[0]
        q = _heads(q_SD.to(k_XCD.dtype), self.n_head).unsqueeze(0).expand(X, -1, -1, -1)
        k, v = _heads(k_XCD, self.n_head), _heads(self.v(x_XCD), self.n_head)
        attn_mask = None if key_mask_XC is None else key_mask_XC[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).flatten(-2))  # X S D


class ForwardSolution(nn.Module):
    """Reconstruction: each sensor embedding queries the S quantised sources (per step)."""

    def __init__(self, dim: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, sensor_XCD: torch.Tensor, sources_XSD: torch.Tensor) -> torch.Tensor:
        k, v = self.kv(sources_XSD).chunk(2, dim=-1)
        q = _heads(sensor_XCD.to(k.dtype), self.n_head)
        out = F.scaled_dot_product_attention(
            q,
            _heads(k, self.n_head),
            _heads(v, self.n_head),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).flatten(-2))  # X C D


class BrainTokenizerEncoder(nn.Module):
    """(B, C, N, L) windows + (B, C, D) sensors -> (B, S, W, D) continuous source latents."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.seanet_encoder = SEANetEncoder(
            cfg.n_dim, cfg.n_filters, cfg.ratios, cfg.kernel_size, cfg.last_kernel_size
        )
        self.neuros = nn.Parameter(torch.randn(cfg.n_neuro, cfg.n_dim))
        self.backwardsolution = BackWardSolution(cfg.n_dim, cfg.n_head, cfg.dropout)
        self.k_proj = nn.Linear(cfg.n_dim, cfg.n_dim)

    def forward(
        self, x_BCNL: torch.Tensor, sensor_BCD: torch.Tensor, mask_BC: torch.Tensor | None
    ) -> torch.Tensor:
        B, C, N, L = x_BCNL.shape
        if mask_BC is None:
            z = self._seanet(x_BCNL.reshape(B * C, N, L)).view(B, C, -1, sensor_BCD.shape[-1])
        else:  # run the codec on real channels only; padded rows stay zero and are masked
            rows = self._seanet(x_BCNL[mask_BC])
            z = rows.new_zeros(B, C, *rows.shape[1:]).index_put((mask_BC,), rows)
        W, D = z.shape[2], z.shape[3]
        k = self.k_proj(z + sensor_BCD.unsqueeze(2).to(z.dtype))
        k_XCD = k.transpose(1, 2).reshape(B * W, C, D)
        z_XCD = z.transpose(1, 2).reshape(B * W, C, D)
        key_mask = None
        if mask_BC is not None:
            key_mask = mask_BC.unsqueeze(1).expand(B, W, C).reshape(B * W, C)
        out = self.backwardsolution(self.neuros, k_XCD, z_XCD, key_mask)
        return out.view(B, W, -1, D).transpose(1, 2)  # B S W D

    def _seanet(self, x_RNL: torch.Tensor) -> torch.Tensor:
        R, N, L = x_RNL.shape
        z = self.seanet_encoder(x_RNL.reshape(R * N, 1, L))  # (R N) D t
        return z.view(R, N, z.shape[1], -1).transpose(2, 3).reshape(R, -1, z.shape[1])


class BrainQuantizer(nn.Module):
    """L2-normalise, then residual VQ (EMA codebooks, k-means init, dead-code replacement,
    rotation trick) from vector-quantize-pytorch. Runs in float32 outside autocast."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.commitment_weight = cfg.commitment_weight
        self.rvq = ResidualVQ(
            dim=cfg.n_dim,
            num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            eps=cfg.ema_eps,
            kmeans_init=True,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            rotation_trick=cfg.rotation_trick,
            commitment_weight=cfg.commitment_weight,
            sync_codebook=cfg.sync_codebook,
        )

    @property
    def codebooks(self) -> torch.Tensor:
        """(Q, K, D) codebook vectors."""
        return self.rvq.codebooks

    def lookup(self, indices_BSWQ: torch.Tensor) -> torch.Tensor:
        """Quantised features (B, S, W, D): the sum of the selected codebook vectors."""
        books = self.codebooks  # Q K D
        q_idx = torch.arange(books.shape[0], device=indices_BSWQ.device)
        return books[q_idx, indices_BSWQ.long()].sum(-2)

    def forward(self, z_BSWD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns quantised (B, S, W, D), indices (B, S, W, Q) and the mean commitment loss."""
        B, S, W, D = z_BSWD.shape
        with torch.autocast(device_type=z_BSWD.device.type, enabled=False):
            flat = F.normalize(z_BSWD.float(), p=2.0, dim=-1).reshape(B, S * W, D)
            quant, idx, losses = self.rvq(flat)
            if self.training:
                commit = losses.mean()
            else:  # the library reports no loss in eval; compute it from the selected codes
                codes = self.rvq.get_codes_from_indices(idx)  # Q B n D
                residual, per_layer = flat, []
                for code in codes:
                    per_layer.append(F.mse_loss(residual, code) * self.commitment_weight)
                    residual = residual - code
                commit = torch.stack(per_layer).mean().detach()
        return quant.view(B, S, W, D), idx.view(B, S, W, -1), commit


class BrainTokenizerDecoder(nn.Module):
    """(B, S, W, D) quantised sources + (B, C, D) sensors -> (R, N, L) rows of real channels."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.forwardsolution = ForwardSolution(cfg.n_dim, cfg.n_head, cfg.dropout)
        self.seanet_decoder = SEANetDecoder(
            cfg.n_dim, cfg.n_filters, cfg.ratios, cfg.kernel_size, cfg.last_kernel_size
        )
        self.steps = cfg.steps_per_window

    def forward(
        self, q_BSWD: torch.Tensor, sensor_BCD: torch.Tensor, mask_BC: torch.Tensor | None
    ) -> torch.Tensor:
        B, S, W, D = q_BSWD.shape
        C = sensor_BCD.shape[1]
        sources = q_BSWD.transpose(1, 2).reshape(B * W, S, D)
        sensors = sensor_BCD.unsqueeze(1).expand(B, W, C, D).reshape(B * W, C, D)
        y = self.forwardsolution(sensors, sources).view(B, W, C, D).transpose(1, 2)  # B C W D
        rows = y.reshape(B * C, W, D) if mask_BC is None else y[mask_BC]
        R, t = rows.shape[0], self.steps
        rows = rows.reshape(R * (W // t), t, D).transpose(1, 2)  # (R N) D t
        out = self.seanet_decoder(rows)  # (R N) 1 L
        return out.view(R, W // t, -1)


class BrainTokenizer(nn.Module):
    """Stage-1 tokenizer: 2-s windows of any sensor layout -> 16 sources x 8 steps x 4 codes.

    ``BrainTokenizer()`` is the paper's configuration (about 5.05 M trainable parameters;
    codebooks are EMA buffers). Keyword overrides are ``TokenizerConfig`` fields.
    """

    def __init__(self, config: TokenizerConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = replace(config or TokenizerConfig(), **overrides)
        self.config = cfg
        self.window_length = cfg.window_length
        self.sensor_embed = BrainSensorModule(cfg.n_dim)
        self.encoder = BrainTokenizerEncoder(cfg)
        self.quantizer = BrainQuantizer(cfg)
        self.decoder = BrainTokenizerDecoder(cfg)
        self.apply(init_official)
        if cfg.init == "sharp":
            init_sharp(self)
        maybe_compile([self.encoder.seanet_encoder, self.decoder.seanet_decoder], cfg.compile)

    # ------------------------------------------------------------------ helpers
    def unfold(self, x_BCT: torch.Tensor, overlap_ratio: float = 0.0) -> torch.Tensor:
        """(B, C, T) -> (B, C, N, L) windows; with overlap the end is right-padded with zeros.

        Without overlap a trailing partial window is dropped (official behaviour).
        """
        L = self.window_length
        if x_BCT.shape[-1] < L:
            x_BCT = F.pad(x_BCT, (0, L - x_BCT.shape[-1]))
        stride = int(L * (1 - overlap_ratio))
        if overlap_ratio > 0.0:
            rem = (x_BCT.shape[-1] - L) % stride
            if rem:
                x_BCT = F.pad(x_BCT, (0, stride - rem))
        return x_BCT.unfold(-1, L, stride)

    def embed_sensors(self, pos: torch.Tensor, sensor_type: torch.Tensor) -> torch.Tensor:
        """(B, C, 6) + (B, C) -> (B, C, D)."""
        return self.sensor_embed(pos, sensor_type.long())

    def config_dict(self) -> dict:
        return asdict(self.config)

    # ------------------------------------------------------------------ inference
    def encode(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        sensor_type: torch.Tensor,
        mask: torch.Tensor | None = None,
        overlap_ratio: float = 0.0,
    ) -> torch.Tensor:
        """Continuous source latents (B, S, W, D) before quantisation."""
        mask = _check_inputs(x, pos, sensor_type, mask)
        sensors = self.embed_sensors(pos, sensor_type)
        return self.encoder(self.unfold(x, overlap_ratio), sensors, mask)

    @torch.no_grad()
    def tokenize(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        sensor_type: torch.Tensor,
        mask: torch.Tensor | None = None,
        overlap_ratio: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantised features (B, 16, W, 256) and codebook indices (B, 16, W, 4).

        Runs in eval mode (no codebook update); W = 8 per window of ``unfold``.
        """
        was_training = self.training
        self.eval()
        try:
            z = self.encode(x, pos, sensor_type, mask, overlap_ratio)
            quant, idx, _ = self.quantizer(z)
        finally:
            self.train(was_training)
        return quant, idx

    def decode(
        self,
        features: torch.Tensor,
        pos: torch.Tensor,
        sensor_type: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Quantised features (B, S, W, D) -> reconstruction (B, C, N * L), z-scored units.

        Padded channels (``mask`` False) come back as zeros.
        """
        B, C = sensor_type.shape
        rows = self.decoder(features, self.embed_sensors(pos, sensor_type), mask)
        rows = rows.reshape(rows.shape[0], -1).float()
        if mask is None:
            return rows.view(B, C, -1)
        return rows.new_zeros(B, C, rows.shape[-1]).index_put((mask,), rows)

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        sensor_type: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode, quantise and decode every channel (eval mode): (B, C, N * L)."""
        was_training = self.training
        self.eval()
        try:
            quant, _ = self.tokenize(x, pos, sensor_type, mask)
            return self.decode(quant, pos, sensor_type, mask)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        sensor_type: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        corrupt: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training objective on 2-s windows of ``x`` (10 s in the paper).

        With ``corrupt`` (default: in training) a random 25 % of each recording's real channels
        (at least 1, never all) is hidden from the encoder and its input gets N(0, 0.1^2)
        noise; every real channel is reconstructed against its per-window z-scored target.
        Returns ``loss`` (to backpropagate) and detached ``time_loss``, ``pcc``, ``amp_loss``,
        ``phase_loss``, ``commitment_loss``, ``judge_loss``. Runs under bf16 autocast with
        ``precision="bf16"`` (``speed.py``); the losses are float32 either way.
        """
        with autocast(self.config.precision, x.device.type):
            return self._objective(x, pos, sensor_type, mask, corrupt)

    def _objective(self, x, pos, sensor_type, mask, corrupt) -> dict[str, torch.Tensor]:
        cfg = self.config
        mask = _check_inputs(x, pos, sensor_type, mask)
        corrupt = self.training if corrupt is None else corrupt
        x_BCNL = self.unfold(x)
        sensors = self.embed_sensors(pos, sensor_type)
        enc_mask, x_in = mask, x_BCNL
        if corrupt:
            enc_mask = _drop_channels(mask, x_BCNL.shape[:2], cfg.channel_drop_ratio, x.device)
            if cfg.noise_std > 0:
                x_in = x_BCNL + cfg.noise_std * torch.randn_like(x_BCNL)
        z = self.encoder(x_in, sensors, enc_mask)
        quant, _, commit = self.quantizer(z)
        rec = self.decoder(quant, sensors, mask).float()  # R N L
        target = zscore(x_BCNL.reshape(-1, *x_BCNL.shape[2:]) if mask is None else x_BCNL[mask])
        parts = reconstruction_losses(rec, target)
        loss = total_loss(parts, commit, phase_weight=cfg.phase_weight)
        out = {"loss": loss}
        out.update({k: v.detach() for k, v in parts.items()})
        out["commitment_loss"] = commit.detach()
        out["judge_loss"] = loss.detach()
        return out


def _check_inputs(
    x: torch.Tensor, pos: torch.Tensor, sensor_type: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor | None:
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, channels, samples), got shape {tuple(x.shape)}")
    B, C, _ = x.shape
    if tuple(pos.shape) != (B, C, 6):
        raise ValueError(f"pos must be ({B}, {C}, 6), got {tuple(pos.shape)}")
    if tuple(sensor_type.shape) != (B, C):
        raise ValueError(f"sensor_type must be ({B}, {C}), got {tuple(sensor_type.shape)}")
    if mask is None:
        return None
    if tuple(mask.shape) != (B, C) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape ({B}, {C})")
    if not torch.compiler.is_compiling() and not bool(mask.any(dim=1).all()):
        raise ValueError("every recording in the batch needs at least one real channel")
    return mask


def _drop_channels(
    mask: torch.Tensor | None, shape: torch.Size, ratio: float, device: torch.device
) -> torch.Tensor:
    """Encoder mask with max(int(C_b * ratio), 1) random real channels hidden (never all)."""
    B, C = shape
    if mask is None:
        mask = torch.ones(B, C, dtype=torch.bool, device=device)
    n_real = mask.sum(dim=1, keepdim=True)
    n_drop = torch.clamp((n_real * ratio).long(), min=1)
    n_drop = torch.minimum(n_drop, n_real - 1)
    scores = torch.rand(B, C, device=device).masked_fill(~mask, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    return mask & (rank >= n_drop)
