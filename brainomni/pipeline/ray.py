"""The Ray executor: every unit a Ray task. The one library module that imports ``ray``.

Each unit is one task (``num_cpus`` and a ``memory`` reservation from the stage, so Ray
never schedules more than a node's memory allows); at most ``max_in_flight`` are submitted
at once. The task calls :func:`brainomni.pipeline.stage.execute` unchanged, which retries
transient object-store errors itself and writes the unit's ledger part. A worker that dies
(out of memory, a crashing reader) is retried by Ray ``max_retries`` times and then recorded
by the driver as a ``failed`` row ``WorkerDied.<Class>``. An exception that still escapes a
task (e.g. its argument could not be deserialised) is a ``failed`` row
``TaskError.<Class>``: no unit can stop the driver.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brainomni.io.redact import redact

from .stage import Stage, Work, execute, write_row

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


def _run_one(stage: Stage, work: Work) -> Any:
    """The Ray task body (module level: shipped by reference, not as a closure)."""
    import ray

    from brainomni.cli_common import install_redaction

    install_redaction()  # workers log through Ray's handlers: redact credentials there too
    stage.worker_init()
    ctx = ray.get_runtime_context()
    worker = f"{ray.util.get_node_ip_address()}:{ctx.get_node_id()[:8]}:{os.getpid()}"
    return execute(stage, work, worker=worker)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def error_row(stage: Stage, work: Work, exc: BaseException) -> Any:
    """The row of a task whose exception escaped :func:`execute` (written to the ledger)."""
    cause = getattr(exc, "cause", None) or exc
    what = stage.describe(work.unit)
    logger.error("task for %s raised: %s", redact(what), redact(str(exc)))
    row = stage.failed_row(
        work,
        f"TaskError.{type(cause).__name__}",
        f"{what}: the task raised {type(cause).__name__} ({_first_line(cause)}); the driver "
        "log has the traceback; rerun to retry this unit",
        worker="?",
    )
    stage.clean_partial(work.unit)
    write_row(stage, row)
    return row


def dead_row(stage: Stage, work: Work, exc: BaseException) -> Any:
    """The row of a unit whose worker died and whose retries are spent."""
    row = stage.failed_row(
        work,
        f"WorkerDied.{type(exc).__name__}",
        f"{stage.describe(work.unit)}: the worker running it died ({type(exc).__name__}), "
        "e.g. out of memory or a crash in native code; raise --task-memory or inspect it",
        worker="?",
    )
    stage.clean_partial(work.unit)  # a killed worker leaves its temporary files
    write_row(stage, row)
    return row


@dataclass
class RayExecutor:
    """Ray settings. ``address=None`` joins ``RAY_ADDRESS`` when set (as under
    ``ray job submit``), else starts a local Ray with ``num_cpus`` CPUs. A Ray already
    initialised in this process is used as it is (and left running)."""

    address: str | None = None
    num_cpus: int | None = None  # local Ray only
    max_in_flight: int | None = None  # default: 2 x cluster CPUs
    task_memory: int | None = None  # bytes reserved per unit (default: the stage's)
    task_cpus: float | None = None  # CPUs reserved per unit (default: the stage's)
    max_retries: int = 2  # worker deaths, per unit
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

    def run(self, stage: Stage, work: Sequence[Work], on_result: Callable[[Any], None]) -> None:
        import ray
        from ray.exceptions import RayError, RayTaskError

        t0 = time.perf_counter()
        started = self._init()
        self.startup_s = round(time.perf_counter() - t0, 3)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            window = self.max_in_flight or 2 * max(cpus, 1)
            remote = ray.remote(_run_one).options(
                num_cpus=self.task_cpus or stage.cpus,
                memory=self.task_memory or stage.memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            stage_ref = ray.put(stage.for_workers())  # once, not once per task
            queue = list(reversed(work))
            pending: dict[Any, Work] = {}
            while queue or pending:
                while queue and len(pending) < window:
                    w = queue.pop()
                    pending[remote.remote(stage_ref, w)] = w
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    w = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except RayTaskError as exc:  # escaped execute(): recorded, run goes on
                        row = error_row(stage, w, exc)
                    except RayError as exc:  # worker/node died, retries spent
                        row = dead_row(stage, w, exc)
                    on_result(row)
        finally:
            if started:
                t1 = time.perf_counter()
                ray.shutdown()
                self.shutdown_s = round(time.perf_counter() - t1, 3)


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def ray_map(
    address: str | None = None, num_cpus: int | None = None, *, cpus_per_task: float = 1.0
) -> Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]:
    """A ``map_fn(fn, items)`` that runs each call as a Ray task (results in order); the
    older interface of pack and tokenize (prefer ``executor="ray"``: window, worker-death
    rows). Starts a local Ray unless ``address`` (or ``RAY_ADDRESS``) names a cluster."""
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
