"""Run ingest, pack or tokenize the way the SIGKILL test needs, in this process or as
``python -m tests.pipeline.killable STAGE ARGS_JSON`` (a subprocess the test kills).

The fault hook lives here, in the tests, never in library loops: :class:`KillingExecutor`
is the local executor with each stage's unit function wrapped so that the process sends
itself SIGKILL right after unit number ``$BRAINOMNI_TEST_KILL_AFTER`` (1-based) has written
its output and before its ledger row is written — deterministic, no timing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from brainomni.pipeline.local import LocalExecutor

KILL_ENV = "BRAINOMNI_TEST_KILL_AFTER"
PACK_PROFILE = {"window_s": 4.0, "stride_s": 4.0, "target_shard_bytes": 1024}  # a shard a sample


class _KillAfter:
    """``stage`` with ``run_unit`` killing this process after the ``at``-th unit."""

    def __init__(self, stage: Any, at: int) -> None:
        self._stage, self._at, self._n = stage, at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    def run_unit(self, unit: Any, **kw: Any) -> Any:
        row = self._stage.run_unit(unit, **kw)
        self._n += 1
        if self._n == self._at:
            os.kill(os.getpid(), signal.SIGKILL)
        return row


class KillingExecutor(LocalExecutor):
    def run(self, stage, work, on_result):  # noqa: ANN001
        at = int(os.environ.get(KILL_ENV) or 0)
        super().run(_KillAfter(stage, at) if at else stage, work, on_result)


def fake_tokens(model: int, samples: list[dict], batch_size: int, overlap_ratio: float):
    """Stand-in tokenizer: tokens derived from each sample's key and the 'weights'."""
    return [np.full((2, 3, 1), len(s["key"]) + model, np.int16) for s in samples]


def fake_model(path: str) -> int:
    return int(Path(path, "model.safetensors").read_bytes()[0])


def install_fake_tokenizer() -> None:
    import brainomni.tokenize as tk

    tk.tokenize_samples = fake_tokens
    tk._model = fake_model


def run(stage: str, args: dict[str, Any], executor: Any) -> Any:
    if stage == "ingest":
        from brainomni.ingest import IngestJob, run_job
        from brainomni.sources import Source

        job = IngestJob(sources=(Source(**args["source"]),), dest=args["dest"], progress_every_s=0)
        return run_job(job, executor)
    if stage == "pack":
        from brainomni.pack import get_profile
        from brainomni.pack.run import pack

        cfg = get_profile("tokenizer-10s", **PACK_PROFILE)
        return pack(args["src"], args["dest"], cfg, executor=executor, progress_every_s=0)
    if stage == "tokenize":
        import brainomni.tokenize as tk

        manifest = json.loads(Path(args["manifest"]).read_text())
        return tk.tokenize_corpus(args["tokenizer"], manifest, args["dest"], executor=executor)
    raise ValueError(stage)


if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    if name == "tokenize":
        install_fake_tokenizer()
    run(name, params, KillingExecutor())
    sys.exit(0)
