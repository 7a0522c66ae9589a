"""The stage core: one way to declare and run a unit-of-work job (ingest, pack, tokenize,
a corpus QC report...), with a ledger, resume, progress and a summary.

* :mod:`.stage` — :class:`Stage` (units from a frozen list, how one runs, its completion
  check, its ledger row) and :func:`execute` (one unit, the same under every executor);
* :mod:`.ledger` — Parquet parts per unit and attempt, compacted; dedupe;
* :mod:`.run` — :func:`run_stage`, executor names (``local``, ``ray``; ``serial`` = local);
* :mod:`.local`, :mod:`.ray` — the executors (Ray is imported only in :mod:`.ray`);
* :mod:`.progress`, :mod:`.summary`;
* :mod:`.qc_report` — an example stage in ~30 lines: a per-store QC report of a corpus.
"""

from .ledger import ALREADY_DONE, FINAL_OUTCOMES, Ledger, dedupe
from .local import LocalExecutor, MapExecutor
from .progress import Progress
from .run import EXECUTORS, StageFailed, StageResult, executor_name, get_executor, run_stage
from .stage import Stage, StageRow, Work, execute
from .summary import format_summary, summarize

__all__ = [
    "ALREADY_DONE",
    "EXECUTORS",
    "FINAL_OUTCOMES",
    "Ledger",
    "LocalExecutor",
    "MapExecutor",
    "Progress",
    "Stage",
    "StageFailed",
    "StageResult",
    "StageRow",
    "Work",
    "dedupe",
    "execute",
    "executor_name",
    "format_summary",
    "get_executor",
    "run_stage",
    "summarize",
]
