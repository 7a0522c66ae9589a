"""The end-of-run summary of any stage: counts by outcome, failures by error class with
what to do, and the run's facts (executor, timings, units reused)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from brainomni.io.commit import atomic_write_bytes
from brainomni.io.fs import join_url

from .ledger import ALREADY_DONE

SUMMARY_FILE = "summary.json"

# advice for the error classes the core itself produces; stages add their own
CORE_FIXES: dict[str, str] = {
    "WorkerDied": "the worker died (out of memory, a crash in native code): raise the "
    "per-unit memory or inspect the unit",
    "TaskError": "the task failed outside the unit's processing: rerun; report if it stays",
    "StorageUnavailable": "object storage stayed unreachable for the retry window: rerun",
    "Unexpected": "a case the code does not handle: report it with the example",
}


def fix_for(error_class: str, fixes: Mapping[str, str] | None = None) -> str:
    """The advice for an error class (exact, then its prefix before a dot)."""
    table = {**CORE_FIXES, **(fixes or {})}
    if error_class in table:
        return table[error_class]
    return table.get(error_class.split(".", 1)[0], "see the reason of the example row")


def failure_table(
    rows: Sequence[Any], fixes: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One entry per error class of the ``failed`` rows: count, an example unit, its reason
    and the fix; most frequent first."""
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.outcome != "failed":
            continue
        cls = r.error_class or "unspecified"
        example = getattr(r, "relpath", "") or getattr(r, "uri", "") or r.key
        entry = table.setdefault(
            cls,
            {
                "error_class": cls,
                "count": 0,
                "example": example,
                "reason": r.reason,
                "fix": fix_for(cls, fixes),
            },
        )
        entry["count"] += 1
    return sorted(table.values(), key=lambda e: (-e["count"], e["error_class"]))


def summarize(
    rows: Sequence[Any],
    *,
    run: Mapping[str, Any] | None = None,
    fixes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of a ledger (one row per unit)."""
    return {
        "units": len(rows),
        "by_outcome": dict(sorted(Counter(r.outcome for r in rows).items())),
        "already_done": sum(1 for r in rows if r.reason == ALREADY_DONE),
        "items": sum(getattr(r, "items", 0) or 0 for r in rows if r.outcome == "ok"),
        "bytes_out": sum(getattr(r, "bytes_out", 0) or 0 for r in rows if r.outcome == "ok"),
        "failures": failure_table(rows, fixes),
        **({"run": dict(run)} if run else {}),
    }


def write_summary(dest: str, summary: Mapping[str, Any], storage_options=None) -> str:
    url = join_url(dest, SUMMARY_FILE)
    body = json.dumps(summary, indent=1, sort_keys=True, default=str).encode()
    atomic_write_bytes(url, body, storage_options)
    return url


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`summarize`'s output."""
    lines = [
        f"units: {summary['units']}  "
        + "  ".join(f"{k}={v}" for k, v in summary["by_outcome"].items())
        + f"  (already done before this run: {summary['already_done']})",
    ]
    return "\n".join(lines + failure_lines(summary))


def failure_lines(summary: Mapping[str, Any], header: bool = False) -> list[str]:
    """The failures-by-error-class table and the run line of a summary (every stage's)."""
    lines = []
    failures = summary.get("failures") or []
    if failures:
        lines.append(f"failures ({sum(e['count'] for e in failures)}), by error class:")
        if header:
            lines.append(f"  {'error class':<28} {'count':>5}  {'example':<48} fix")
        for e in failures:
            lines.append(
                f"  {e['error_class'][:28]:<28} {e['count']:5d}  {e['example'][-48:]:<48} {e['fix']}"
            )
    run = summary.get("run") or {}
    if run:
        lines.append(
            "run: " + "  ".join(f"{k}={v}" for k, v in run.items() if not isinstance(v, dict))
        )
    return lines
