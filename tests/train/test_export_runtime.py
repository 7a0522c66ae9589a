"""An export loads as the fp32, eager model whatever it was trained with (bf16, compile)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from brainomni.models import BrainTokenizer, TokenizerConfig
from brainomni.train.export import CONFIG, WEIGHTS, load_export, model_json


def test_export_loads_fp32_eager(tmp_path):
    m = BrainTokenizer(TokenizerConfig(n_filters=2, precision="bf16", compile=True))
    (tmp_path / CONFIG).write_text(json.dumps(model_json(m, "tokenizer")))
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / WEIGHTS))
    got = load_export(tmp_path)
    assert (got.config.precision, got.config.compile) == ("fp32", False)
    for k, v in m.state_dict().items():  # the weights themselves are untouched
        assert torch.equal(got.state_dict()[k], v), k
    assert json.loads((tmp_path / CONFIG).read_text())["tokenizer_config"]["compile"] is True
