"""Run metrics on rank 0: ``metrics.jsonl`` always, TensorBoard when it is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    """Rank 0: ``metrics.jsonl`` always, TensorBoard when installed."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.fh = open(out / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            log.warning(
                "tensorboard is not installed: metrics go to metrics.jsonl only "
                "(pip install tensorboard)"
            )

    def write(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps({"kind": kind, "step": step, **values}, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()
