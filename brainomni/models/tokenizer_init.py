"""The BrainTokenizer's initialisations: the official one (default) and ``init="sharp"``
(:class:`~brainomni.models.tokenizer.TokenizerConfig`), kept apart from the architecture."""

from __future__ import annotations

from torch import nn


def init_official(m: nn.Module) -> None:
    """Official initialisation: Linear/Embedding truncated normal (std 0.02), biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)


def init_sharp(model: nn.Module) -> None:
    """``init="sharp"``: an initialisation that breaks the official one's symmetry.

    At the official init (std-0.02 Linear weights) the tokenizer starts near-symmetric: the
    SEANet encoder's output is mostly one constant vector (its convolution biases), the
    source queries attend uniformly over the channels, every source is the same vector, the
    codebook collapses to one code and the decoder emits the same waveform for every
    channel, whose gradient towards channel-specific output is second order (README, the
    demo section). Here Linear layers get PyTorch's fan-in default, the SEANet convolution
    biases are zeroed (the encoder's output then follows its input) and the attention keys
    (``encoder.k_proj``, ``decoder.forwardsolution.kv``) get std-1 weights, so that attention
    starts sharp and channel- and source-specific.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    for seanet in (model.encoder.seanet_encoder, model.decoder.seanet_decoder):
        for m in seanet.modules():
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d) and m.bias is not None:
                nn.init.zeros_(m.bias)
    for lin in (model.encoder.k_proj, model.decoder.forwardsolution.kv):
        nn.init.normal_(lin.weight, std=1.0)
