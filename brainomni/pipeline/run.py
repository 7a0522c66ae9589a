"""Run any stage with any executor: frozen units -> ledger-based resume -> executor ->
compaction -> summary (``DEST/summary.json``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from brainomni.io.redact import redact

from .ledger import FINAL_OUTCOMES
from .progress import Progress
from .stage import Stage, Work
from .summary import write_summary

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
ALIASES = {"serial": "local"}


class Executor(Protocol):
    """Runs every :class:`Work` of a stage (anywhere, any order) through
    :func:`~brainomni.pipeline.stage.execute` and hands each row to ``on_result`` in the
    driver."""

    name: str

    def run(self, stage: Stage, work: Sequence[Work], on_result: Callable[[Any], None]) -> None: ...


class StageFailed(RuntimeError):
    """Units of a stage ended ``failed``: its final output (index, manifest) is not written."""


def executor_name(name: str) -> str:
    """``local`` or ``ray`` (``serial`` accepted for ``local``); ``ValueError`` otherwise."""
    name = ALIASES.get(name, name)
    if name not in EXECUTORS:
        raise ValueError(f"executor {name!r}: use one of {', '.join(EXECUTORS)} (or serial)")
    return name


def get_executor(spec: Any = None, **ray_options: Any) -> Any:
    """An executor from a name (``local``, ``serial``, ``ray``) or an executor object as it
    is; ``None`` is ``local``. ``ray_options`` (``address``, ``num_cpus``,
    ``max_in_flight``, ``task_memory``, ``task_cpus``, ``max_retries``, ``env_vars``) go to
    :class:`~brainomni.pipeline.ray.RayExecutor` and are ignored by ``local``, so an entry
    point can pass its options whatever the executor."""
    if spec is not None and not isinstance(spec, str):
        return spec
    if executor_name(spec or "local") == "ray":
        from .ray import RayExecutor  # Ray is imported only there

        return RayExecutor(**{k: v for k, v in ray_options.items() if v is not None})
    from .local import LocalExecutor

    return LocalExecutor()


@dataclass
class StageResult:
    rows: list[Any]  # the compacted ledger: one row per unit (and earlier units it holds)
    summary: dict[str, Any]
    received: list[Any] = field(default_factory=list)  # the rows of this run, as they came

    def failed(self) -> list[Any]:
        return [r for r in self.rows if r.outcome == "failed"]


def run_stage(
    stage: Stage,
    executor: Any = None,
    *,
    progress_every_s: float = 10.0,
    run_facts: Mapping[str, Any] | None = None,
    ledger_flush_rows: int = 5000,
    ledger_flush_s: float = 600.0,
) -> StageResult:
    """Run ``stage``: units whose final row of an earlier run stands (:meth:`Stage.reuse`)
    are not run again; the others run with ``executor`` (name or object); the ledger is
    compacted and the summary written. Failed units are rows, not exceptions.

    Every ``ledger_flush_rows`` received rows, or ``ledger_flush_s`` seconds, the rows
    received since are folded into a ledger segment and their parts removed
    (:meth:`~brainomni.pipeline.ledger.Ledger.flush`): while workers compute, so the end
    of the run folds a few segments and the last rows' parts, and a rerun after a killed
    driver reads segments, not a file per unit."""
    executor = get_executor(executor)
    t0 = time.perf_counter()
    units = list(stage.units())
    keys = [stage.key(u) for u in units]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"stage {stage.name}: duplicate unit keys {dup}")
    ledger = stage.ledger()
    previous = {r.key: r for r in ledger.read()}
    work: list[Work] = []
    reused = 0
    for key, unit in zip(keys, units, strict=True):
        prev = previous.get(key)
        if prev is not None and prev.outcome in FINAL_OUTCOMES and stage.reuse(unit, prev):
            reused += 1
            continue
        work.append(Work(key, unit, prev.attempt + 1 if prev is not None else 1))
    facts = dict(stage.before_run())
    t_plan = time.perf_counter() - t0
    logger.info("%s: %d units (%d to run, %d reused)", stage.name, len(units), len(work), reused)
    progress = Progress(
        len(work), every_s=progress_every_s, label=stage.name, unit=stage.unit_label
    )
    received: list[Any] = []
    pending: list[Any] = []  # received since the last ledger segment
    last_flush = time.monotonic()

    def on_result(row: Any) -> None:
        nonlocal last_flush
        received.append(row)
        pending.append(row)
        progress.update(row)
        due = time.monotonic() - last_flush >= ledger_flush_s
        if len(pending) >= ledger_flush_rows or due:
            try:
                ledger.flush(pending)
            except OSError as exc:  # store unreachable (retries spent): the parts stay
                logger.warning(
                    "%s: ledger segment not written (%s); retried later",
                    stage.name,
                    redact(str(exc)),
                )
            else:
                pending.clear()
            last_flush = time.monotonic()

    if work:
        executor.run(stage, work, on_result)
        logger.info(progress.line())
    t_run = time.perf_counter() - t0 - t_plan
    facts.update(stage.after_run())
    rows = ledger.compact(pending)  # the segments hold the other received rows
    missing = {w.key for w in work} - {r.key for r in received}
    if missing:  # an executor that dropped work is a bug, not a data problem
        raise RuntimeError(f"{len(missing)} units of stage {stage.name} have no ledger row")
    run = {
        "stage": stage.name,
        "executor": getattr(executor, "name", type(executor).__name__),
        "dest": redact(stage.dest),
        "ran": progress.done,
        "not_rerun": reused,
        "plan_s": round(t_plan, 3),
        "executor_startup_s": getattr(executor, "startup_s", 0.0),
        "executor_shutdown_s": getattr(executor, "shutdown_s", 0.0),
        "run_s": round(t_run, 3),
        **facts,
        **(run_facts or {}),
    }
    run["total_s"] = round(time.perf_counter() - t0, 3)
    summary = stage.summarize(rows, run)
    url = write_summary(stage.dest, summary, dict(stage.dest_storage_options))
    logger.info("%s: %s; summary at %s", stage.name, summary.get("by_outcome"), redact(url))
    return StageResult(rows, summary, received)


def raise_if_failed(stage: Stage, result: StageResult, what: str) -> None:
    """:class:`StageFailed` naming the failed units (up to 5) and where the ledger is."""
    bad = result.failed()
    if not bad:
        return
    lines = "; ".join(f"{r.key}: {r.error_class}: {r.reason}" for r in bad[:5])
    raise StageFailed(
        f"{stage.name}: {len(bad)} of {len(result.rows)} units failed, {what} not written "
        f"({lines}{'; ...' if len(bad) > 5 else ''}). The ledger under {redact(stage.dest)} "
        "has every row; fix the cause and rerun (finished units are not redone)"
    )
