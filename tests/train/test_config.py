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


def test_no_decay_groups_and_deepspeed_config():
    from brainomni.models import BrainOmni
    from brainomni.train.optim import deepspeed_config, param_groups

    m = BrainOmni("tiny", lm_depth=2)
    decay, no_decay = param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "mask_token" in nd and any("predict_head" in n for n in nd)
    assert any("norm" in n for n in nd) and all(p.requires_grad for p in decay["params"])
    assert not any(n.startswith("tokenizer") for n in nd)  # frozen: not optimised at all
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
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
