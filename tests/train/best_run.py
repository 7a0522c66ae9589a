"""One tiny tokenizer run shared by the best-checkpoint and reconstruction-report tests.

Trained in this process once (1 rank, gloo, ZeRO-2, 4 steps, validation and a checkpoint
after every step, ``keep_last=1``) and cached; tests copy it before changing it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from tests.train.pretrain_run import CHEAP_STEPS

_CACHE: dict[str, Path] = {}
# no plots: these tests read the logs and checkpoints (tok_run checks the plots)
SETS = ["max_steps=4", "val_every=1", "ckpt_every=1", "keep_last=1", "log_every=1", "plots=false"]
SETS += CHEAP_STEPS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained_run() -> Path:
    """The run folder (call only when the real recordings are present)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    import torch.distributed as dist

    from brainomni.train.config import apply_overrides, get_recipe
    from brainomni.train.trainer import Trainer
    from tests.loader.data import packed_manifest

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    saved = {k: os.environ.get(k) for k in [*env, "MASTER_PORT"]}
    os.environ.update({**env, "MASTER_PORT": str(_free_port())})
    try:
        m = packed_manifest("tokenizer-10s")
        cfg = apply_overrides(
            get_recipe("cpu-test-tokenizer"), [f"data.manifest={json.dumps(str(m))}", *SETS]
        )
        root = Path(tempfile.mkdtemp(prefix="brainomni-best-"))
        atexit.register(shutil.rmtree, root, True)
        out = root / "run"
        Trainer(cfg, out).train()
    finally:
        if dist.is_initialized():  # DeepSpeed's too: it caches groups of the old one
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _CACHE["run"] = out
    return out


def val_records(run: Path) -> dict[int, dict]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "val":
            out[r["step"]] = r
    return out
