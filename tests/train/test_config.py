"""Recipes, overrides, the optimizer groups and the DeepSpeed config (no DeepSpeed needed)."""

from __future__ import annotations

import pytest

from brainomni.train.config import RECIPES, apply_overrides, get_recipe


def test_paper_recipes_follow_the_spec():
    tok, tiny, base = (
        get_recipe(n) for n in ("paper-tokenizer", "paper-omni-tiny", "paper-omni-base")
    )
    assert (tok.global_batch, tok.data.micro_batch, tok.epochs) == (512, 16, 16)
    assert (tok.optim.lr, tok.optim.betas, tok.optim.eps, tok.optim.weight_decay) == (
        2e-4,
        (0.5, 0.9),
        1e-5,
        1e-2,
    )
    assert (tok.optim.warmup_ratio, tok.optim.warmup_min_ratio, tok.optim.cos_min_ratio) == (
        0.1,
        0.1,
        0.05,
    )
    assert (tiny.global_batch, tiny.data.micro_batch, tiny.epochs, tiny.optim.lr) == (
        256,
        8,
        32,
        5e-4,
    )
    assert (tiny.optim.betas, tiny.optim.eps, tiny.optim.weight_decay) == ((0.9, 0.95), 1e-6, 0.05)
    assert tiny.optim.cos_min_ratio == 0.1 and base.optim.lr == 4e-4 and base.size == "base"
    assert all(r.zero_stage == 2 for r in (tok, tiny, base))
    assert tok.grad_accum(16) == 2 and tiny.grad_accum(16) == 2 and tok.grad_accum(4) == 8
    with pytest.raises(ValueError, match="micro_batch"):
        tok.grad_accum(3)
    assert tok.total_steps(1000) == 32  # ceil(16 * 1000 / 512)
    for name in RECIPES:
        assert get_recipe(name).recipe == name


def test_overrides_are_checked():
    c = apply_overrides(
        get_recipe("paper-omni-tiny"),
        [
            "data.source=raw",
            'tokenizer="/x"',
            "optim.betas=[0.9,0.99]",
            "model.lm_depth=4",
            "max_steps=3",
            "offload=true",
        ],
    )
    assert (c.data.source, c.tokenizer, c.optim.betas, c.model, c.max_steps, c.offload) == (
        "raw",
        "/x",
        (0.9, 0.99),
        {"lm_depth": 4},
        3,
        True,
    )
    for bad, msg in (
        ("data.nope=1", "unknown"),
        ("zero_stage=5", "zero_stage"),
        ("global_batch=100", "multiple"),
        ("optim.lr=0", "optim.lr"),
        ("novalue", "key=value"),
    ):
        with pytest.raises(ValueError, match=msg):
            apply_overrides(c, [bad])
    with pytest.raises(ValueError, match="tokenizer"):
        apply_overrides(get_recipe("paper-omni-tiny"), ["data.source=raw"])


def _official_groups(model, omni: bool) -> tuple[set[str], set[str]]:
    """The official ``get_parameters_groups`` rules, written out from OpenTSLab/BrainOmni
    (``brainomni/model.py`` and ``braintokenizer/model.py``): (decayed, not decayed) names.
    The tokenizer's "codebook" group (``quantizer`` params, wd 0) counts as not decayed."""
    decay, keep = set(), set()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if omni:
            exempt = (
                "norm" in n
                or "predict_head" in n
                or n in ["projection.weight", "projection.bias", "mask_token"]
            )
        else:
            exempt = (
                "norm" in n
                or n in ["sensor_embed.sensor_embedding_layer.weight"]
                or "quantizer" in n
            )
        (keep if exempt else decay).add(n)
    return decay, keep


@pytest.mark.parametrize("kind", ["omni-base", "omni-tiny", "tokenizer"])
def test_weight_decay_groups_equal_the_official_ones(kind):
    from brainomni.models import BrainOmni, BrainTokenizer
    from brainomni.train.optim import param_groups

    if kind == "tokenizer":
        m = BrainTokenizer()
    else:
        m = BrainOmni(kind.split("-")[1], lm_depth=2)
    decay, no_decay = param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    got_decay = {names[id(p)] for p in decay["params"]}
    got_keep = {names[id(p)] for p in no_decay["params"]}
    want_decay, want_keep = _official_groups(m, omni=kind != "tokenizer")
    assert got_decay == want_decay and got_keep == want_keep
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    # the differences the issue found are gone: biases and the source queries decay
    if kind == "tokenizer":
        assert "encoder.neuros" in got_decay and "encoder.k_proj.bias" in got_decay
        assert got_keep == {
            "sensor_embed.sensor_embedding_layer.weight",
            "sensor_embed.norm.weight",
        }
    else:
        assert not any(n.startswith("tokenizer") for n in got_decay | got_keep)  # frozen
        assert "mask_token" in got_keep and any("predict_head" in n for n in got_keep)
        assert any(n.endswith("bias") for n in got_decay)
        if kind == "omni-base":  # lm_dim 512 != 256: a real projection, not decayed
            assert {"projection.weight", "projection.bias"} <= got_keep


def test_deepspeed_config():
    from brainomni.train.optim import deepspeed_config

    cfg = get_recipe("paper-omni-tiny")
    ds = deepspeed_config(cfg, world=16, total_steps=1000)
    assert ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 256
    assert ds["scheduler"]["params"] == {
        "total_num_steps": 1000,
        "warmup_num_steps": 100,
        "warmup_min_ratio": 0.1,
        "cos_min_ratio": 0.1,
    }
    assert ds["zero_optimization"]["stage"] == 2
    off = deepspeed_config(apply_overrides(cfg, ["offload=true"]), 16, 1000)
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert off["optimizer"]["params"]["torch_adam"] is False
