"""Run ingest tasks as Ray tasks: the one library module that imports ``ray``.

Each recording is one task (``num_cpus=1`` and a ``memory`` reservation, so Ray never
schedules more than a node's memory allows); at most ``max_in_flight`` are submitted at
once. The task calls :func:`brainomni.ingest.task.run_task` unchanged, which retries
transient object-store errors itself and writes the recording's ledger part. A worker that
dies (out of memory, a crashing reader) is retried by Ray ``max_retries`` times and then
recorded as a ``failed`` row. :func:`run_task` records every exception of a recording as its
row; one that still escapes a task (e.g. the ledger part could not be written, or the
task's argument could not be deserialised) is recorded by the driver as a ``failed`` row
(``TaskError.<Class>``) and the job goes on: no recording can stop the driver.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainomni.ingest.ledger import LedgerRow, write_part
from brainomni.ingest.task import IngestTask, base_row, now_iso, remove_partial, run_task
from brainomni.storage import redact

logger = logging.getLogger(__name__)

# Environment the workers need that a cluster's nodes may not share with the driver
# (endpoints and region only: credentials come from each node's environment or role).
FORWARD_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "RAY_AUTH_MODE",
    "BRAINOMNI_STORAGE_RETRY_S",  # the object-store retry window (--storage-retry-s)
)


def _ingest_one(task: IngestTask) -> LedgerRow:
    """The Ray task body (module level: shipped by reference, not as a closure)."""
    import mne
    import ray

    from brainomni.entry import install_redaction

    install_redaction()  # workers log through Ray's handlers: redact credentials there too
    mne.set_log_level("ERROR")
    ctx = ray.get_runtime_context()
    worker = f"{ray.util.get_node_ip_address()}:{ctx.get_node_id()[:8]}:{os.getpid()}"
    return run_task(task, worker=worker)


@dataclass
class RayExecutor:
    """Ray settings. ``address=None`` joins ``RAY_ADDRESS`` when set (as under
    ``ray job submit``), else starts a local Ray with ``num_cpus`` CPUs."""

    address: str | None = None
    num_cpus: int | None = None  # local Ray only
    max_in_flight: int | None = None  # default: 2 x cluster CPUs
    task_memory: int = 1 << 30  # bytes reserved per task
    max_retries: int = 2  # worker deaths, per task
    env_vars: Mapping[str, str] = field(default_factory=dict)
    name: str = "ray"
    startup_s: float = 0.0  # measured: ray.init (0 when Ray was already up)
    shutdown_s: float = 0.0

    def _init(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        env = {k: os.environ[k] for k in FORWARD_ENV if os.environ.get(k)}
        env.update(self.env_vars)
        kwargs: dict[str, Any] = {
            "runtime_env": {"env_vars": env} if env else None,
            "log_to_driver": True,
            "configure_logging": False,
        }
        if self.address or os.environ.get("RAY_ADDRESS"):  # e.g. under `ray job submit`
            kwargs["address"] = self.address or os.environ["RAY_ADDRESS"]
        else:
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        ray.init(**kwargs)
        logger.info("ray: %s", redact(str(ray.cluster_resources())))
        return True

    def run(self, tasks: Sequence[IngestTask], on_result: Callable[[LedgerRow], None]) -> None:
        import ray
        from ray.exceptions import RayTaskError

        t0 = time.perf_counter()
        started = self._init()
        self.startup_s = round(time.perf_counter() - t0, 3)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            window = self.max_in_flight or 2 * max(cpus, 1)
            remote = ray.remote(_ingest_one).options(
                num_cpus=1,
                memory=self.task_memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            queue = list(reversed(tasks))
            pending: dict[Any, IngestTask] = {}
            while queue or pending:
                while queue and len(pending) < window:
                    task = queue.pop()
                    pending[remote.remote(task)] = task
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except RayTaskError as exc:  # escaped run_task: recorded, job goes on
                        row = self._error_row(task, exc)
                    except ray.exceptions.RayError as exc:  # worker/node died, retries spent
                        row = self._dead_row(task, exc)
                    on_result(row)
        finally:
            if started:
                t1 = time.perf_counter()
                ray.shutdown()
                self.shutdown_s = round(time.perf_counter() - t1, 3)

    @staticmethod
    def _error_row(task: IngestTask, exc: BaseException) -> LedgerRow:
        cause = getattr(exc, "cause", None) or exc
        logger.error("task for %s raised: %s", redact(task.ref.uri), redact(str(exc)))
        row = base_row(task, worker="?")
        row.outcome, row.error_class = "failed", f"TaskError.{type(cause).__name__}"
        detail = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
        row.reason = redact(
            f"{task.ref.uri}: the task raised {type(cause).__name__} ({detail}); the driver "
            "log has the traceback; rerun the job to retry this recording"
        )
        row.finished_at = now_iso()
        remove_partial(task)
        write_part(task.dest, row, dict(task.dest_storage_options))
        return row

    @staticmethod
    def _dead_row(task: IngestTask, exc: BaseException) -> LedgerRow:
        row = base_row(task, worker="?")
        row.outcome, row.error_class = "failed", f"WorkerDied.{type(exc).__name__}"
        row.reason = redact(
            f"{task.ref.uri}: the worker running it died ({type(exc).__name__}), e.g. out of "
            "memory or a crash in a reader; raise --task-memory or inspect the recording"
        )
        row.finished_at = now_iso()
        remove_partial(task)  # a killed worker leaves its .tmp folder
        write_part(task.dest, row, dict(task.dest_storage_options))
        return row


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def ray_map(
    address: str | None = None, num_cpus: int | None = None, *, cpus_per_task: float = 1.0
) -> Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]:
    """A ``map_fn(fn, items)`` that runs each call as a Ray task (results in order).

    Used by the pack and tokenize entry points, whose library code takes any ``map``-like
    function. Starts a local Ray unless ``address`` (or ``RAY_ADDRESS``) names a cluster.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=address,
        num_cpus=num_cpus,
        ignore_reinit_error=True,
        logging_level=logging.WARNING,
        include_dashboard=False,
    )
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=2)(_call)

    def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        ref = ray.put(fn)
        return ray.get([remote.remote(ref, i) for i in items])

    return run
