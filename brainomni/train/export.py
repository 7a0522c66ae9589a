"""Export a checkpoint as one fp32 safetensors file plus a JSON config, and load it back
without DeepSpeed.

``OUT/model.safetensors`` holds every weight and buffer (RVQ codebooks and EMA statistics
included; for BrainOmni also its frozen tokenizer); ``OUT/config.json`` says what to build.
``load_export(OUT)`` returns the model in eval mode; only torch, safetensors and
``brainomni.models`` are needed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .checkpoint import file_sha256  # one implementation (checkpoint hashes every file)

log = logging.getLogger(__name__)

MODEL_FORMAT = "brainomni.model/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def model_json(model: Any, kind: str, **extra: Any) -> dict[str, Any]:
    """What :func:`build_model` needs to rebuild ``model`` (a BrainTokenizer or BrainOmni)."""
    if kind == "tokenizer":
        d = {"tokenizer_config": asdict(model.config), "omni_config": None}
    else:
        d = {
            "tokenizer_config": asdict(model.tokenizer.config),
            "omni_config": asdict(model.config),
        }
    return {"format": MODEL_FORMAT, "kind": kind, **d, **extra}


def build_model(cfg: dict[str, Any]):
    """An untrained model from a ``config.json`` / ``model.json`` dict."""
    from brainomni.models import BrainOmni, BrainTokenizer, TokenizerConfig
    from brainomni.models.omni import BrainOmniConfig

    if cfg.get("format") != MODEL_FORMAT:
        raise ValueError(f"not a brainomni model config (format {cfg.get('format')!r})")
    t = dict(cfg["tokenizer_config"])
    t["ratios"] = tuple(t["ratios"])
    tok = BrainTokenizer(TokenizerConfig(**t))
    if cfg["kind"] == "tokenizer":
        return tok
    o = BrainOmniConfig(**cfg["omni_config"])
    return BrainOmni("tiny", tokenizer=tok, **asdict(o))


_RUNTIME_DEFAULTS = {"precision": "fp32", "compile": False}


def load_export(path: str | Path, *, strict: bool = True):
    """The exported model (eval mode, fp32). ``path``: an export folder or a checkpoint."""
    from safetensors.torch import load_file

    p = Path(path)
    cfg_path = p / CONFIG if (p / CONFIG).exists() else p / "model.json"
    cfg = json.loads(cfg_path.read_text())
    # How a model was trained (bf16 autocast, torch.compile) is not how it is used: an
    # export loads as the documented fp32, eager model (compiling on load would take minutes).
    for key in ("tokenizer_config", "omni_config"):
        if isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **{k: v for k, v in _RUNTIME_DEFAULTS.items() if k in cfg[key]}}
    model = build_model(cfg)
    state = load_file(str(p / WEIGHTS))
    model.load_state_dict(state, strict=strict)
    model.eval()
    return model


def export(
    ckpt: str | Path, out: str | Path, *, trust_unhashed: bool = False, best: bool = False
) -> Path:
    """Write ``OUT/model.safetensors`` + ``OUT/config.json`` from a checkpoint folder
    (``.../step-N``) or a run folder (its latest complete checkpoint; with ``best``, the
    checkpoint of its lowest validation loss, ``RUN/best.json``).

    The checkpoint is verified first (:func:`.checkpoint.verify`: every file's sha256, no
    pickle that is not plain data), although export itself reads only its safetensors and
    JSON files: a checkpoint that would be refused on resume is not exported either."""
    from .checkpoint import META, CheckpointError, best_dir, latest, read_best, verify

    src = Path(ckpt)
    best_rec = None
    if best:
        if (src / META).exists():
            raise CheckpointError(
                f"{src} is a checkpoint folder; --best takes the run folder (the one holding "
                f"best.json and checkpoints/)"
            )
        src, best_rec = best_dir(src), read_best(src)
    elif not (src / META).exists():
        found = latest(src)
        if found is None:
            raise FileNotFoundError(f"{src} is neither a complete checkpoint nor a run folder")
        src = found
    meta = verify(src, trust_unhashed=trust_unhashed)
    cfg = json.loads((src / "model.json").read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / WEIGHTS, out / WEIGHTS)
    cfg = {
        **cfg,
        "step": meta["step"],
        "source_checkpoint": str(src.resolve()),
        "weights_sha256": file_sha256(out / WEIGHTS),
    }
    if best_rec is not None:
        cfg["best"] = {k: best_rec[k] for k in ("step", "metric", "value")}
    (out / CONFIG).write_text(json.dumps(cfg, indent=1, sort_keys=True))
    load_export(out)  # refuse to leave something that does not load
    log.info("exported %s -> %s", src, out)
    return out
