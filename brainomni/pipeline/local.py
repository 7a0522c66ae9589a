"""The local executor: every unit in this process, one after another (laptops, tests,
debugging, small jobs). ``serial`` is an accepted alias of its name."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .stage import Stage, Work, execute


@dataclass
class LocalExecutor:
    name: str = "local"
    startup_s: float = 0.0
    shutdown_s: float = 0.0

    def run(self, stage: Stage, work: Sequence[Work], on_result: Callable[[Any], None]) -> None:
        worker = f"local:{os.getpid()}"
        for w in work:
            on_result(execute(stage, w, worker=worker))


@dataclass
class MapExecutor:
    """Any ``map``-like ``map_fn(fn, items)`` as an executor (the older ``map_fn`` arguments
    of pack and tokenize). Every unit goes through :func:`~brainomni.pipeline.stage.execute`
    (ledger part, error rows); a worker that dies raises out of ``map_fn`` — use
    :class:`~brainomni.pipeline.ray.RayExecutor` for worker-death rows and a window."""

    map_fn: Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]] = map
    name: str = "map"
    startup_s: float = 0.0
    shutdown_s: float = 0.0

    def run(self, stage: Stage, work: Sequence[Work], on_result: Callable[[Any], None]) -> None:
        for row in self.map_fn(partial(execute, stage), list(work)):
            on_result(row)
