"""Clean one recording: read -> sensor table -> filter/resample -> bad channels -> store.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .errors import RecordingFailed, RecordingOutcome, SkipRecording
from .records import EEG, GRAD, MAG, SENSOR_TYPE_NAMES, RecordingRef, SensorTable
from .sensors.coils import meg_compensation_grade
from .signal.config import DEFAULT_CONFIG, CleanConfig
from .sources.sidecars import crawl_problem, load_electrodes

log = logging.getLogger(__name__)

_UNITS = {107: "V", 112: "T", 201: "T/m"}  # FIFF unit codes


@dataclass
class PreprocessResult:
    """The outcome of cleaning one recording."""

    uri: str
    outcome: str = "ok"
    reason: str = ""
    error_class: str | None = None
    recording_id: str = ""
    fmt: str | None = None
    reader: str | None = None
    sfreq: float | None = None  # input rate, Hz
    duration_s: float | None = None  # input duration
    table: SensorTable | None = None
    qc: dict[str, Any] = field(default_factory=dict)
    store: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    bytes_in: int | None = None
    transient: bool = False  # a failure caused by a passing object-store error
    sidecars: dict[str, Any] = field(default_factory=dict)  # how electrodes.tsv was read
    fixes: dict[str, Any] = field(default_factory=dict)  # catalog channel fixes applied

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``brainomni inspect --json``."""
        return {
            "uri": self.uri,
            "recording_id": self.recording_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "error_class": self.error_class,
            "format": self.fmt,
            "reader": self.reader,
            "sfreq": self.sfreq,
            "duration_s": self.duration_s,
            "channels": self.table.as_rows() if self.table is not None else [],
            "summary": self.table.summary() if self.table is not None else {},
            "dropped": [{"name": d.name, "reason": d.reason} for d in self.table.dropped]
            if self.table is not None
            else [],
            "qc": self.qc,
            "fixes": self.fixes,
            "store": self.store,
            "timings": self.timings,
        }


def _kept_info(raw, table: SensorTable):
    """MNE Info of the kept channels, with the sensor table's EEG positions applied."""
    import mne
    from mne.io.constants import FIFF

    # verbose="error": dropping the reference channels drops CTF compensators, expected here
    info = mne.pick_info(raw.info, list(map(int, table.picks)), verbose="error")
    with info._unlock():
        for i, ch in enumerate(info["chs"]):
            if table.types[i] == EEG and table.pos_source[i] != "file":  # incl. rescaled
                ch["loc"][:3] = table.pos[i]
                ch["loc"][3:6] = 0.0
                ch["coord_frame"] = FIFF.FIFFV_COORD_HEAD
        info["bads"] = []
    return info


def _chpi_freqs(info) -> tuple[float, ...]:
    import mne

    try:
        freqs = mne.chpi.get_chpi_info(info, on_missing="ignore")[0]
    except (ValueError, RuntimeError, KeyError):
        return ()
    return tuple(float(f) for f in np.atleast_1d(freqs))


def _line_freq(ref: RecordingRef, raw, config: CleanConfig) -> tuple[float | None, str]:
    from .readers import recording_line_freq

    if config.line_freq is not None:
        return config.line_freq, "config"
    if ref.line_freq:
        return float(ref.line_freq), "bids"
    f = recording_line_freq(raw)
    if f:
        return float(f), "file"
    return None, "unknown"


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
    from .readers import open_raw
    from .sensors import build_sensor_table
    from .sensors.fixes import apply_channel_fixes

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


class _Cleaner:
    """The cleaning of one opened recording, step by step (see the module docstring)."""

    def __init__(
        self,
        opened,
        ref: RecordingRef,
        res: PreprocessResult,
        table: SensorTable,
        config: CleanConfig,
        bads: tuple[str, ...],
    ) -> None:
        from .signal.design import plan_chain
        from .signal.stats import ChannelStats

        self.opened, self.raw, self.ref, self.res = opened, opened.raw, ref, res
        self.table, self.config = table, config
        self.sfreq = float(self.raw.info["sfreq"])
        self.n_times = int(self.raw.n_times)
        self.line_freq, self.line_src = _line_freq(ref, self.raw, config)
        self.chpi = _chpi_freqs(self.raw.info) if config.chpi else ()
        # cHPI lines inside the band are notched too (stationary sinusoids)
        extra = tuple(f for f in self.chpi if f < config.h_freq + 24)
        self.plans = plan_chain(
            self.sfreq, len(table), config, line_freq=self.line_freq, extra_notch=extra
        )
        self.n_out = self.n_times
        for p in self.plans:
            self.n_out = p.n_out(self.n_out)
        chs = self.raw.info["chs"]
        self.units = [_UNITS.get(int(chs[int(p)]["unit"]), "?") for p in table.picks]
        self.info = _kept_info(self.raw, table)
        self.known = self._known_bads(bads)
        _check_bad_fraction(self.known, table, ref.uri, config)
        self.stats = ChannelStats(
            len(table),
            self.sfreq,
            sfreq_out=config.sfreq,
            line_freqs=config.line_freqs(self.line_freq),
            # the spectral rule's PSD: EEG channels, the official segments, BAD spans out
            rule_rows=np.flatnonzero(table.types == EEG) if config.detect_bads else None,
            rule_n_fft=config.psd_n_fft,
            n_out_total=self.n_out,
            bad_spans=[
                (int(np.floor(a * config.sfreq)), int(np.ceil(b * config.sfreq)))
                for a, b in _bad_segments(self.raw)
            ],
        )
        self.sumsq = np.zeros(len(table))
        self.picks = np.asarray(table.picks, dtype=int)
        # Each channel's first sample is subtracted (in float64, before the float32 blocks):
        # a large DC offset (e.g. 0.1 V on an unconnected EEG lead) would otherwise cost
        # float32 precision. Every chain ends with zero DC gain: the output is unchanged.
        self.offset = self.raw.get_data(picks=self.picks, start=0, stop=1)[:, 0]
        self.stats.offset = self.offset
        from .readers.fifblocks import fif_block_reader

        # FIF (most MEG): a direct block reader, bit-identical to get_data and cheaper
        self.fast = fif_block_reader(self.raw, self.picks)

    def _known_bads(self, given: tuple[str, ...]) -> dict[int, list[str]]:
        """Bad channels known before reading the signal, with their reasons."""
        index = {n: i for i, n in enumerate(self.table.names)}
        known: dict[int, list[str]] = {}
        for names, why in (
            (self.raw.info["bads"], "marked bad in the file"),
            (self.ref.bad_channels, "marked bad in channels.tsv"),
            (given, "given as bad"),
        ):
            for n in names:
                if n in index:
                    known.setdefault(index[n], []).append(why)
        return known

    def _read(self, a: int, b: int) -> np.ndarray:
        return self.raw.get_data(picks=self.picks, start=a, stop=b)

    @property
    def reader(self):
        """What the block filter reads from: the direct FIF reader or ``get_data``."""
        return self.fast if self.fast is not None else self._read

    def first_pass(self, writer, op, progress: bool) -> None:
        """Read, filter and resample every block; apply ``op``; write; gather statistics."""
        from .signal.stream import run_chain

        bar = _progress(progress, self.n_out, self.ref.uri)
        try:
            for _, y in run_chain(
                self.plans,
                self.reader,
                len(self.table),
                self.n_times,
                on_input=self.stats.update_input,
                on_spectrum=self.stats.update_spectrum,
                offset=self.offset,
                reuse_output=True,  # each block is consumed (and copied by the writer) here
            ):
                self.stats.update_output(y)
                if not op.is_identity:
                    op.apply(y)
                sq = _sum_squares(y)
                # a NaN or inf anywhere in the block makes its channel's sum of squares
                # non-finite (_sum_squares redoes an overflowing block in float64)
                if not np.all(np.isfinite(sq)):
                    raise RecordingFailed(
                        f"{self.ref.uri}: non-finite samples (NaN/inf) in the signal; the "
                        "file is corrupt or a channel is broken",
                        error_class="NonFiniteSignal",
                    )
                self.sumsq += sq
                writer.append(y)
                if bar is not None:
                    bar.update(y.shape[1])
        finally:
            if bar is not None:
                bar.close()

    def detect(self):
        """(all bads with reasons, the rules' report or None) over the whole recording."""
        from .signal.bads import detect_bads

        rep = None
        if self.config.detect_bads:
            freqs, psd = self.stats.rule_psd()
            rep = detect_bads(
                windows=self.stats.windows(),
                line_ratio=self.stats.line_ratio(),
                spectrum=(self.stats.rule_rows, freqs, psd),
                types=self.table.types,
                units=self.units,
                config=self.config,
                known=set(self.known),
            )
        bads = {k: list(v) for k, v in self.known.items()}
        for i, why in rep.reasons.items() if rep is not None else ():
            bads.setdefault(i, []).extend(why)
        _check_bad_fraction(bads, self.table, self.ref.uri, self.config)
        return bads, rep

    def correct(self, writer, op_before, bads) -> None:
        """Second, in-place pass for bads found by the rules (rewrites changed rows only)."""
        from .stores.recording import rewrite_signal

        op = _spatial(self.info, self.table, sorted(bads), self.config, self.ref.uri)
        changed = op.changed_rows(op_before)
        # the operators mix channels within a modality group (EEG; MEG = MAG + GRAD) only
        group = np.where(self.table.types == EEG, 0, 1)
        needed = np.flatnonzero(np.isin(group, np.unique(group[changed])))
        self.sumsq[changed] = 0.0

        def fix(y: np.ndarray) -> np.ndarray:
            op.apply(y)
            yc = y[changed]
            self.sumsq[changed] += np.einsum("ij,ij->i", yc, yc, dtype=np.float64)
            return y

        rewrite_signal(writer, fix, rows=changed, reads=needed)

    def attrs(self, qc: dict[str, Any]) -> dict[str, Any]:
        ref, res, plans = self.ref, self.res, self.plans
        return {
            "config": self.config.to_dict(),
            "config_hash": self.config.hash,
            "provenance": {
                "source_uri": ref.uri,
                "source_checksum": ref.checksum,
                "recording_id": ref.recording_id,
                "dataset": ref.dataset,
                "dataset_version": ref.dataset_version,
                "subject": ref.subject,
                "session": ref.session,
                "task": ref.task,
                "run": ref.run,
                "modality": ref.modality,
                "format": res.fmt,
                "reader": res.reader,
                "code_version": __version__,
                "sfreq_in": self.sfreq,
                "rate_error": plans[0].ratio.rate_error,
                "fixes": res.fixes,
            },
            "qc": qc,
        }

    def qc(self, bads, rep) -> dict[str, Any]:
        table, n_out = self.table, self.n_out
        names = table.names
        rms = {}
        for t in (EEG, MAG, GRAD):
            rows = np.flatnonzero(table.types == t)
            if rows.size:
                rms[SENSOR_TYPE_NAMES[t]] = float(
                    np.sqrt(self.sumsq[rows].sum() / (rows.size * max(1, n_out)))
                )
        n = len(names)
        flat_s = rep.flat_seconds if rep is not None else np.zeros(n)
        clip = rep.clipped_fraction if rep is not None else np.zeros(n)
        freqs, psd = self.stats.psd()
        return {
            "bad_channels": [{"name": names[i], "reasons": bads[i]} for i in sorted(bads)],
            "interpolated": [names[i] for i in sorted(bads)],
            "dropped": [{"name": d.name, "reason": d.reason} for d in table.dropped],
            "n_channels": table.summary(),
            "meg_compensation_grade": meg_compensation_grade(self.raw.info),  # as stored
            **_position_qc(table),
            "flat_seconds": {names[i]: float(flat_s[i]) for i in np.flatnonzero(flat_s)},
            "flat_seconds_total": float(np.sum(flat_s)),
            "clipped_fraction": float(np.mean(clip)) if n else 0.0,
            "clipped_channels": {names[i]: round(float(clip[i]), 4) for i in np.flatnonzero(clip)},
            "line_freq": self.line_freq,
            "line_freq_source": self.line_src,
            "notch_freqs": list(self.plans[-1].notch_freqs),
            "chpi_freqs": list(self.chpi),
            "sfreq_in": self.sfreq,
            "sfreq_out": self.config.sfreq,
            "input_duration_s": self.n_times / self.sfreq,
            "output_duration_s": n_out / self.config.sfreq,
            "rms": rms,
            "channel_rms": [float(np.sqrt(v / max(1, n_out))) for v in self.sumsq],
            "psd": _psd_summary(freqs, psd, table, bads),
            "bad_segments": _bad_segments(self.raw),
            "rate_error": self.plans[0].ratio.rate_error,
            "preloaded": self.opened.preload_reason,
            "block_geometry": [
                {
                    "nfft_in": p.nfft_in,
                    "hop_in": p.hop_in,
                    "margin_in": p.margin_in,
                    "ratio": f"{p.ratio.up}/{p.ratio.down}",
                }
                for p in self.plans
            ],
        }


def _clean(opened, ref, res, table, target, target_so, config, bads, progress):
    from .stores.recording import RecordingStoreWriter, row_chunk_for

    c = _Cleaner(opened, ref, res, table, config, bads)
    op1 = _spatial(c.info, table, sorted(c.known), config, ref.uri)
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
        res.qc = {**c.qc(all_bads, rep), "sidecars": res.sidecars}
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


def _position_qc(table: SensorTable) -> dict[str, Any]:
    """Where the EEG positions came from (per-source counts) and whether they are mixed
    (file / electrodes.tsv / template in one recording: allowed, but flagged)."""
    eeg = [s for s, t in zip(table.pos_source, table.types, strict=True) if t == EEG]
    counts = {k: eeg.count(k) for k in sorted(set(eeg))}
    return {"eeg_pos_sources": counts, "eeg_pos_mixed": len(counts) > 1}


def _sum_squares(y: np.ndarray) -> np.ndarray:
    """Per-channel sum of squares of a float32 block, in float64.

    BLAS dot products (SIMD, several accumulators: ~1e-7 relative) at a fifth of the cost
    of a float64 einsum; a block whose float32 sums overflow while its samples are finite
    is redone in float64. A NaN or inf sample leaves its channel's sum non-finite."""
    sq = np.fromiter((np.dot(r, r) for r in y), dtype=np.float64, count=y.shape[0])
    if not np.all(np.isfinite(sq)) and np.all(np.isfinite(y)):
        sq = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    return sq


def _psd_summary(freqs, psd, table, bads) -> dict[str, Any]:
    """Median Welch PSD per sensor type (good channels) and each bad channel's, log10 SI²/Hz,
    before spatial operators: what ``inspect --plot`` and dataset cards draw."""
    out: dict[str, Any] = {"freqs": [float(f) for f in freqs]}
    if not psd.any():
        return out
    lp = np.log10(np.maximum(psd, 1e-40))
    for t in (EEG, MAG, GRAD):
        rows = [i for i in np.flatnonzero(table.types == t) if i not in bads]
        if rows:
            out[SENSOR_TYPE_NAMES[t]] = np.round(np.median(lp[rows], axis=0), 3).tolist()
    out["bad"] = {table.names[i]: np.round(lp[i], 3).tolist() for i in sorted(bads)[:32]}
    return out


def _bad_segments(raw) -> list[list[float]]:
    """[start, stop] seconds (from the first sample) of the file's BAD_* annotations, e.g.
    EGI/CTF acquisition skips (``BAD_ACQ_SKIP``): filtered output near them is not signal,
    and pack rejects windows that overlap them (reason ``bad_segment``)."""
    ann = raw.annotations
    if len(ann) == 0:
        return []
    offset = raw.first_time if ann.orig_time is not None else 0.0
    dur = raw.n_times / raw.info["sfreq"]
    out = []
    for a in ann:
        if str(a["description"]).upper().startswith("BAD"):
            lo = max(0.0, float(a["onset"]) - offset)
            hi = min(dur, lo + float(a["duration"]))
            if hi >= lo:
                out.append([round(lo, 4), round(hi, 4)])
    return out


def _progress(enabled: bool, total: int, uri: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="sample",
        unit_scale=True,
        desc=os.path.basename(uri.rstrip("/")),
        leave=False,
    )


def _check_bad_fraction(bads: dict[int, list[str]], table: SensorTable, uri: str, config) -> None:
    for t in (EEG, MAG, GRAD):
        rows = np.flatnonzero(table.types == t)
        if rows.size == 0:
            continue
        n_bad = sum(1 for r in rows if int(r) in bads)
        if n_bad / rows.size > config.max_bad_fraction or n_bad == rows.size:
            raise SkipRecording(
                f"{uri}: {n_bad} of {rows.size} {SENSOR_TYPE_NAMES[t]} channels are bad "
                f"(more than {config.max_bad_fraction:.0%}); too few good channels to interpolate",
                error_class="TooManyBadChannels",
            )


def _spatial(info, table, bad_rows, config, uri):
    from .signal.spatial import build_spatial_op

    try:
        return build_spatial_op(
            info,
            table.types,
            bad_rows,
            origin=config.interpolate_origin,
            mode=config.interpolate_mode,
            eeg_reference=config.eeg_reference,
        )
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        raise RecordingFailed(
            f"{uri}: interpolation of bad channels failed: {exc}", error_class="InterpolationError"
        ) from exc
