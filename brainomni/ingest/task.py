"""One unit of ingest work: clean one recording into its store and return its ledger row.

:func:`run_task` is plain library code; executors (serial, Ray) call it unchanged. It never
raises for a bad recording (that is a ``failed`` row); transient object-store errors are
retried with backoff for the retry window (:func:`brainomni.io.retry.retry`), after which the
recording is a ``failed`` row with error class ``StorageUnavailable``; anything else is
recorded as a ``failed`` row (``Unexpected.<Class>``), never raised: one recording never
stops a job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from brainomni.io.fs import get_fs, join_url
from brainomni.io.redact import describe_error, redact
from brainomni.io.retry import RetryPolicy, StorageUnavailable, is_transient, retry
from brainomni.records import RecordingRef
from brainomni.signal.config import DEFAULT_CONFIG, CleanConfig

from .ledger import ALREADY_DONE, LedgerRow, write_part

logger = logging.getLogger(__name__)

RECORDINGS_DIR = "recordings"


class TransientOutcome(Exception):
    """A ``failed`` outcome caused by the object store (retried, then recorded)."""

    def __init__(self, result: Any) -> None:
        super().__init__(result.reason)
        self.result = result


def store_key(ref: RecordingRef) -> str:
    """``recordings/<dataset>/<recording_id>.zarr`` (dataset name made key-safe)."""
    return store_key_for(ref.dataset, ref.recording_id)


def store_key_for(dataset: str, recording_id: str) -> str:
    """:func:`store_key` from a dataset name and a recording id (e.g. of a ledger row)."""
    dataset = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset) or "_"
    return f"{RECORDINGS_DIR}/{dataset.strip('.') or '_'}/{recording_id}.zarr"


@dataclass(frozen=True)
class IngestTask:
    """Everything a worker needs for one recording (plain data: safe to ship to workers)."""

    ref: RecordingRef
    dest: str
    attempt: int = 1
    config: CleanConfig = DEFAULT_CONFIG
    storage_options: Mapping[str, Any] = field(default_factory=dict)  # the source's
    dest_storage_options: Mapping[str, Any] = field(default_factory=dict)
    cache_root: str | None = None  # staging of remote recordings (default: system temp)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def store(self) -> str:
        return join_url(self.dest, store_key(self.ref))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def base_row(task: IngestTask, worker: str) -> LedgerRow:
    ref = task.ref
    return LedgerRow(
        recording_id=ref.recording_id,
        uri=redact(ref.uri),
        dataset=ref.dataset,
        dataset_version=ref.dataset_version,
        relpath=ref.relpath,
        subject=ref.subject,
        session=ref.session,
        task=ref.task,
        run=ref.run,
        modality=ref.modality,
        format=ref.format or "",
        bytes_in=ref.size,
        source_checksum=ref.checksum or "",
        config_hash=task.config.hash,
        attempt=task.attempt,
        worker=worker or f"{socket.gethostname()}:{os.getpid()}",
    )


def _fill_from_qc(row: LedgerRow, qc: Mapping[str, Any]) -> None:
    counts = qc.get("n_channels") or {}
    row.n_eeg, row.n_mag, row.n_grad = (int(counts.get(k, 0)) for k in ("EEG", "MAG", "GRAD"))
    row.n_bad = len(qc.get("interpolated") or ())
    row.output_hours = float(qc.get("output_duration_s") or 0.0) / 3600.0
    row.line_freq = qc.get("line_freq")
    row.line_freq_source = str(qc.get("line_freq_source") or "")
    if qc.get("sfreq_in"):
        row.sfreq_in = float(qc["sfreq_in"])
    if qc.get("input_duration_s") is not None:
        row.duration_s = float(qc["input_duration_s"])


def _fixes_json(summary: Any) -> str:
    return json.dumps(summary, sort_keys=True, separators=(",", ":")) if summary else ""


def _store_bytes(url: str, storage_options: Mapping[str, Any]) -> int:
    fs, path = get_fs(url, storage_options)
    fs.invalidate_cache(path)
    found = retry(lambda: fs.find(path, detail=True), what="size of store")
    return sum(int(i.get("size") or 0) for i in found.values() if i.get("type") != "directory")


def _done_row(task: IngestTask, row: LedgerRow) -> LedgerRow:
    """The row of a recording whose store is already complete, rebuilt from the store."""
    from brainomni.stores.recording import open_recording

    group = retry(
        lambda: open_recording(task.store, dict(task.dest_storage_options)), what="open store"
    )
    attrs = dict(group.attrs)
    _fill_from_qc(row, attrs.get("qc") or {})
    prov = attrs.get("provenance") or {}
    row.format = str(prov.get("format") or row.format)
    row.fixes = _fixes_json(prov.get("fixes"))
    row.outcome, row.reason = "ok", ALREADY_DONE
    return row


def _transient(result: Any) -> bool:
    """A failure the reader attributes to a passing object-store error (retried)."""
    return result.outcome == "failed" and bool(getattr(result, "transient", False))


def unexpected_row(row: LedgerRow, task: IngestTask, exc: BaseException) -> LedgerRow:
    """``row`` as the ``failed`` outcome of an exception no outcome class describes: the job
    goes on, the row names the recording and the exception class (``Unexpected.<Class>``)."""
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    row.outcome, row.error_class = "failed", f"Unexpected.{type(exc).__name__}"
    row.reason = redact(
        f"{task.ref.uri}: unexpected {type(exc).__name__} while processing it ({detail}); "
        "a case brainomni does not handle yet: report it with this file (the worker log has "
        "the traceback)"
    )
    row.store, row.bytes_out = "", None
    return row


def run_task(task: IngestTask, *, worker: str = "", write_ledger: bool = True) -> LedgerRow:
    """Clean ``task.ref`` into ``task.store`` unless already done; its ledger row.

    The row is also written as a ledger part under ``task.dest`` (unless ``write_ledger`` is
    False). Staging files live in a per-call folder under ``task.cache_root``, removed after.

    Never raises for the recording: bad input ends as the outcome
    :func:`~brainomni.clean.preprocess_recording` returns, and any other exception
    (a bug met on this input) is recorded as ``failed`` with
    ``error_class`` ``Unexpected.<Class>`` (last resort, logged with its traceback) and its
    half-written store removed. A spent storage retry window is a ``StorageUnavailable`` row; a ledger part that cannot
    be written is logged and the row still reaches the driver.
    """
    t0 = time.perf_counter()
    row = base_row(task, worker)
    dest_so = dict(task.dest_storage_options)
    try:
        row = _process(task, row, dest_so)
    except StorageUnavailable as exc:  # the retry window is spent: a failed row, not a crash
        _unavailable(row, exc)
    except Exception as exc:  # noqa: BLE001 - last resort: one recording never kills a job
        logger.exception("%s: unexpected error", redact(task.ref.uri))
        row = unexpected_row(row, task, exc)
        remove_partial(task)
    row.t_task_s = round(time.perf_counter() - t0, 4)
    row.finished_at = now_iso()
    if write_ledger:
        try:
            write_part(task.dest, row, dest_so)
        except StorageUnavailable as exc:
            # The row still reaches the driver (the executor hands it back), which writes it
            # into the compacted ledger; see run_job.
            logger.error(
                "ledger part of %s not written, the job keeps the row: %s",
                row.recording_id,
                describe_error(exc),
            )
    return row


def remove_partial(task: IngestTask) -> list[str]:
    """Remove this recording's half-written local store folders (``.<id>.zarr.tmp-*``);
    their paths. Safe while the job runs: one task per recording at a time."""
    from brainomni.io.commit import remove_staging
    from brainomni.io.fs import is_local

    fs, path = get_fs(task.store, dict(task.dest_storage_options))
    return remove_staging(path) if is_local(fs) else []


STORAGE_UNAVAILABLE = "StorageUnavailable"


def _unavailable(row: LedgerRow, exc: StorageUnavailable) -> None:
    """Mark ``row`` failed because object storage stayed unavailable for the retry window."""
    cause = exc.__cause__
    reason = str(exc)
    if isinstance(cause, TransientOutcome):  # the reader's own (transient) failure
        res = cause.result
        row.format = res.fmt or row.format
        row.duration_s, row.sfreq_in = res.duration_s, res.sfreq
        reason = reason.replace(describe_error(cause), res.reason or "")
    row.outcome, row.error_class = "failed", STORAGE_UNAVAILABLE
    row.reason = redact(f"{row.uri}: {reason}; rerun the job to retry it")
    row.store, row.bytes_out = "", None


def _process(task: IngestTask, row: LedgerRow, dest_so: dict[str, Any]) -> LedgerRow:
    """The work of :func:`run_task` up to the ledger part (storage errors propagate)."""
    from brainomni.clean import preprocess_recording
    from brainomni.stores.recording import is_complete

    complete = retry(
        lambda: is_complete(
            task.store,
            config_hash=task.config.hash,
            checksum=task.ref.checksum,
            storage_options=dest_so,
        ),
        what="check store",
    )
    if complete:
        row = _done_row(task, row)
    else:
        if task.cache_root:
            os.makedirs(task.cache_root, exist_ok=True)
        cache = tempfile.mkdtemp(prefix="ingest-", dir=task.cache_root)
        tries = 0

        def attempt() -> Any:
            nonlocal tries
            tries += 1
            res = preprocess_recording(
                task.ref,
                out=task.store,
                config=task.config,
                storage_options=dict(task.storage_options),
                out_storage_options=dest_so,
                cache_dir=cache,
            )
            if res.outcome == "failed" and (res.error_class or "").endswith(STORAGE_UNAVAILABLE):
                # a retry inside the reader already waited a whole window: no second one
                raise StorageUnavailable(res.reason or "") from TransientOutcome(res)
            if _transient(res):
                raise TransientOutcome(res)
            return res

        def classify(exc: BaseException) -> bool:
            return isinstance(exc, TransientOutcome) or is_transient(exc)

        try:
            res = retry(attempt, task.retry_policy, what=redact(task.ref.uri), classify=classify)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        row.tries = tries
        row.outcome, row.reason = res.outcome, redact(res.reason or "")
        row.error_class = res.error_class or ""
        row.format = res.fmt or row.format
        row.duration_s, row.sfreq_in = res.duration_s, res.sfreq
        if res.table is not None:
            counts = res.table.summary()
            row.n_eeg, row.n_mag, row.n_grad = counts["EEG"], counts["MAG"], counts["GRAD"]
        if res.qc:
            _fill_from_qc(row, res.qc)
        row.fixes = _fixes_json(res.fixes)
        row.t_open_s = res.timings.get("open_s")
        row.t_filter_s = res.timings.get("filter_s")
        row.t_second_pass_s = res.timings.get("second_pass_s")
        row.t_preprocess_s = res.timings.get("total_s")
    if row.outcome == "ok":
        row.store = redact(task.store)
        row.bytes_out = _store_bytes(task.store, dest_so)
    return row


def clean_orphans(dest: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Remove half-written local stores left by a killed job; their paths.

    On local disk the store writer stages ``<dataset>/.<id>.zarr.tmp-<uuid>`` beside the
    final folder (and ``….old`` while swapping); a kill leaves them behind. Object-store
    prefixes without a marker need nothing: they count as absent and are rewritten. Call
    only when no other job writes to ``dest`` (one job per destination).
    """
    import glob

    fs, path = get_fs(dest, storage_options)
    from brainomni.io.fs import is_local

    if not is_local(fs):
        return []
    found = sorted(glob.glob(os.path.join(path, RECORDINGS_DIR, "*", ".*.zarr.tmp-*")))
    for orphan in found:
        shutil.rmtree(orphan, ignore_errors=True)
    if found:
        logger.warning("removed %d half-written store folders under %s", len(found), redact(dest))
    return found
