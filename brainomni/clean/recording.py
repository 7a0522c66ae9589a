"""Clean one recording: read -> sensor table -> filter/resample -> bad channels -> store.

Orchestration (:func:`preprocess_recording`); the two passes are in :mod:`.passes`, the QC
in :mod:`.qc`, the report (:class:`PreprocessResult`) in :mod:`.inspect`.

The per-recording entry point used by the CLI and by the Ray ingest job. Every recording
ends as an outcome: ``ok``, ``skipped`` (reason) or ``failed`` (reason, error class); only
programming errors propagate.

Memory is bounded: the raw recording is read in blocks (``CleanConfig.block_seconds``),
filtered and resampled block by block (:mod:`brainomni.signal.stream`) and written to the
store as it goes. Bad channels known up front (marked in the file, BIDS ``channels.tsv``,
or given) are interpolated and EEG is re-referenced on the fly; channels found bad by the
rules once the whole recording has been seen trigger one in-place pass over the (not yet
committed) store. Spatial and temporal operators commute, so both orders give the same
result: the EEG rows of the corrected output are zero-sum combinations of the filtered
channels, which the first pass's common reference leaves unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

from ..errors import RecordingFailed, RecordingOutcome, SkipRecording
from ..records import RecordingRef
from ..signal.config import DEFAULT_CONFIG, CleanConfig
from ..sources.sidecars import crawl_problem, load_electrodes
from .inspect import PreprocessResult
from .passes import Cleaner, spatial_op
from .qc import recording_qc

log = logging.getLogger(__name__)


def preprocess_recording(
    source: RecordingRef | str,
    *,
    out: str | None = None,
    config: CleanConfig = DEFAULT_CONFIG,
    storage_options: dict | None = None,
    out_storage_options: dict | None = None,
    cache_dir: str | None = None,
    bads: tuple[str, ...] = (),
    progress: bool = False,
) -> PreprocessResult:
    """Clean one recording and (when ``out`` is given) write its store.

    ``source`` is a :class:`RecordingRef` (from a crawler, with BIDS sidecars) or a
    path/URL. ``bads`` adds channels to treat as bad. Returns the outcome; raises only for
    programming errors.
    """
    ref = source if isinstance(source, RecordingRef) else RecordingRef(uri=str(source))
    res = PreprocessResult(uri=ref.uri, recording_id=ref.recording_id)
    t0 = time.perf_counter()
    scratch = None
    try:
        if out is None:  # inspect: run the whole chain into a scratch store
            scratch = tempfile.mkdtemp(prefix="brainomni-inspect-", dir=cache_dir)
            target, target_so = os.path.join(scratch, "rec.zarr"), None
        else:
            target, target_so = out, out_storage_options
        _run(ref, res, target, target_so, config, storage_options, cache_dir, bads, progress)
        if out is not None:
            res.store = out
    except RecordingOutcome as o:
        res.outcome, res.reason, res.error_class = o.outcome, o.reason, o.error_class
        res.transient = o.transient
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        res.timings["total_s"] = round(time.perf_counter() - t0, 4)
    return res


def _run(ref, res, target, target_so, config, storage_options, cache_dir, bads, progress):
    from ..readers import open_raw
    from ..sensors import build_sensor_table
    from ..sensors.fixes import apply_channel_fixes

    problem = crawl_problem(ref.extra)  # a sidecar the crawler could not use
    if problem is not None:
        raise problem
    t_open = time.perf_counter()
    with open_raw(
        ref.uri, fmt=ref.format, storage_options=storage_options, cache_dir=cache_dir
    ) as opened:
        raw = opened.raw
        res.fmt, res.reader = opened.fmt, opened.reader
        sfreq = float(raw.info["sfreq"])
        res.sfreq, res.duration_s = sfreq, raw.n_times / sfreq
        res.bytes_in = ref.size
        if res.duration_s < config.min_duration:
            raise SkipRecording(
                f"{ref.uri}: only {res.duration_s:.2f} s of signal, shorter than the "
                f"{config.min_duration:g} s minimum (one tokenizer latent step); nothing usable",
                error_class="TooShort",
            )
        electrodes = load_electrodes(ref.electrodes_uri, storage_options)
        res.sidecars = electrodes.qc() if electrodes is not None else {}
        fixes = apply_channel_fixes(raw, ref)  # the dataset's catalog channel fixes
        ref, res.fixes = fixes.ref, fixes.summary()
        try:
            table = fixes.relabel(
                build_sensor_table(
                    raw.info,
                    channel_types=dict(ref.channel_types) or None,
                    electrodes=electrodes.positions if electrodes is not None else None,
                    exclude=fixes.exclude,
                )
            )
        except RecordingFailed as exc:  # implausible geometry: name the files
            where = f" (electrodes: {electrodes.uri})" if electrodes is not None else ""
            raise RecordingFailed(
                f"{ref.uri}{where}: {exc.reason}", error_class=exc.error_class
            ) from exc
        except SkipRecording as skip:
            raise SkipRecording(
                f"{ref.uri}: {skip.reason}. To keep it, give positions (BIDS electrodes.tsv) "
                "or channel names of the 10-05 system",
                error_class="NoPlaceableChannels",
            ) from skip
        res.table = table
        res.timings["open_s"] = round(time.perf_counter() - t_open, 4)
        _clean(opened, ref, res, table, target, target_so, config, bads, progress)


def _clean(opened, ref, res, table, target, target_so, config, bads, progress):
    from ..stores.recording import RecordingStoreWriter, row_chunk_for

    c = Cleaner(opened, ref, res, table, config, bads)
    op1 = spatial_op(c.info, table, sorted(c.known), config, ref.uri)
    writer = RecordingStoreWriter(
        target,
        n_channels=len(table),
        n_times=c.n_out,
        sfreq=config.sfreq,
        storage_options=target_so,
        row_chunk=row_chunk_for(table.types),
    )
    try:
        t = time.perf_counter()
        c.first_pass(writer, op1, progress)
        res.timings["filter_s"] = round(time.perf_counter() - t, 4)
        all_bads, rep = c.detect()
        if set(all_bads) != set(c.known):
            t = time.perf_counter()
            c.correct(writer, op1, all_bads)
            res.timings["second_pass_s"] = round(time.perf_counter() - t, 4)
        res.qc = {**recording_qc(c, all_bads, rep), "sidecars": res.sidecars}
        marker = {
            "config_hash": config.hash,
            "source_checksum": ref.checksum,
            "recording_id": ref.recording_id,
        }
        writer.commit(table, c.attrs(res.qc), marker)
    except BaseException:
        writer.abort()
        raise
    finally:
        if c.fast is not None:
            c.fast.close()
