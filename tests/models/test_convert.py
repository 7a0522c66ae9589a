"""Checkpoint conversion between the official names/shapes and ours."""

from __future__ import annotations

import torch

from brainomni.models import BrainOmni, BrainTokenizer
from brainomni.models.convert import from_official, load_official, to_official

# Names in the official code (EnCodec SEANet inside model_utils/module.py, vq.py, attn.py).
OFFICIAL_TOKENIZER_KEYS = {
    "sensor_embed.sensor_embedding_layer.weight": (3, 256),
    "sensor_embed.pos_embedding_layer.0.weight": (128, 6),
    "sensor_embed.aggregate_mlp.layer.2.weight": (256, 1024),
    "sensor_embed.norm.weight": (256,),
    "encoder.neuros": (16, 256),
    "encoder.k_proj.weight": (256, 256),
    "encoder.backwardsolution.v.weight": (256, 256),
    "encoder.backwardsolution.proj.bias": (256,),
    "encoder.seanet_encoder.model.0.conv.conv.weight_g": (32, 1, 1),
    "encoder.seanet_encoder.model.0.conv.conv.weight_v": (32, 1, 5),
    "encoder.seanet_encoder.model.1.block.1.conv.conv.weight_v": (16, 32, 3),
    "encoder.seanet_encoder.model.1.shortcut.conv.conv.weight_v": (32, 32, 1),
    "encoder.seanet_encoder.model.3.conv.conv.weight_v": (64, 32, 4),
    "encoder.seanet_encoder.model.9.conv.conv.weight_v": (256, 128, 16),
    "encoder.seanet_encoder.model.10.lstm.weight_ih_l1": (1024, 256),
    "encoder.seanet_encoder.model.12.conv.conv.weight_v": (256, 256, 5),
    "quantizer.rvq.layers.0._codebook.inited": (1,),
    "quantizer.rvq.layers.3._codebook.embed": (512, 256),
    "quantizer.rvq.layers.3._codebook.embed_avg": (512, 256),
    "quantizer.rvq.layers.3._codebook.cluster_size": (512,),
    "decoder.forwardsolution.kv.weight": (512, 256),
    "decoder.seanet_decoder.model.1.lstm.weight_hh_l0": (1024, 256),
    "decoder.seanet_decoder.model.3.convtr.convtr.weight_v": (256, 128, 16),
    "decoder.seanet_decoder.model.4.block.3.conv.conv.weight_v": (128, 64, 1),
    "decoder.seanet_decoder.model.12.conv.conv.weight_v": (1, 32, 5),
}


def test_official_names_and_shapes():
    sd = to_official(BrainTokenizer().state_dict())
    for k, shape in OFFICIAL_TOKENIZER_KEYS.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any("parametrizations" in k or "initted" in k for k in sd)


def test_roundtrip_loads_and_behaves_identically():
    torch.manual_seed(0)
    src = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16).eval()
    x, pos, st = torch.randn(1, 5, 512), torch.randn(1, 5, 6), torch.zeros(1, 5, dtype=torch.long)
    ref = src.reconstruct(x, pos, st)  # also k-means-initialises the codebooks
    official = {f"module.{k}": v for k, v in to_official(src.state_dict()).items()}
    dst = BrainTokenizer(n_filters=8, n_dim=32, codebook_size=16).eval()
    load_official(dst, {"module": official})
    torch.testing.assert_close(dst.reconstruct(x, pos, st), ref)


def test_brainomni_rope_buffers_dropped_and_restored():
    model = BrainOmni("tiny", tokenizer=BrainTokenizer(n_filters=8))
    sd = to_official(model.state_dict())
    assert sd["blocks.0.time_attn.rope_embedding_layer.rotate"].shape == (240, 64)
    assert sd["blocks.0.time_attn.rope_embedding_layer.rotate"].is_complex()
    assert "tokenizer.encoder.seanet_encoder.model.0.conv.conv.weight_g" in sd
    back = from_official(sd)
    assert back.keys() == model.state_dict().keys()
    model.load_state_dict(back)
